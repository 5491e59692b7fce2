/* get_user_pages on p2pmem through /sys/kernel/debug/gup_test (CONFIG_GUP_TEST; p2pdma-behaviour.md section 3).
 * The benchmark ioctls report failure only through the returned size. */
#define AREA "gup"
#include "lib/probe.h"
#include <sys/ioctl.h>

/* mm/gup_test.h is not a UAPI header; layout from p2pdma-behaviour.md section 3 (sizeof 80) */
struct gup_test {
	uint64_t get_delta_usec, put_delta_usec, addr, size;
	uint32_t nr_pages_per_call, gup_flags, test_flags;
	uint32_t which_pages[8];
};
struct pin_longterm_test {
	uint64_t addr, size;
	uint32_t flags;
};
#define GUP_FAST_BENCHMARK      _IOWR('g', 1, struct gup_test)
#define PIN_FAST_BENCHMARK      _IOWR('g', 2, struct gup_test)
#define GUP_BASIC_TEST          _IOWR('g', 4, struct gup_test)
#define PIN_BASIC_TEST          _IOWR('g', 5, struct gup_test)
#define PIN_LONGTERM_TEST_START _IOW('g', 7, struct pin_longterm_test)
#define PIN_LONGTERM_TEST_STOP  _IO('g', 8)
#define FOLL_WRITE 0x01
#define FOLL_PCI_P2PDMA 0x400
#define NPAGES 16

static int gup_fd(void)
{
	int fd = open("/sys/kernel/debug/gup_test", O_RDWR);
	if (fd < 0)
		probe_skip("no /sys/kernel/debug/gup_test (CONFIG_GUP_TEST off or debugfs not mounted)");
	return fd;
}

/* bytes processed by one benchmark ioctl on a fresh p2pmem mapping */
static void gup_bench(unsigned long cmd, uint32_t flags)
{
	int gfd = gup_fd(), fd = p2p_open();
	char *p = p2p_map(fd, NPAGES * PAGE);
	if (p == MAP_FAILED)
		probe_fail("mmap");
	for (int i = 0; i < NPAGES; i++)
		p[i * PAGE] = 1;
	struct gup_test g = {.addr = (uintptr_t)p, .size = NPAGES * PAGE, .nr_pages_per_call = 1, .gup_flags = flags};
	int rc = ioctl(gfd, cmd, &g);
	obs_errno("ioctl", rc ? errno : 0);
	obs_int("pages", rc ? -1 : (long long)(g.size / PAGE));
	munmap(p, NPAGES * PAGE);
	close(fd);
	close(gfd);
}

CASE(gup_fast_plain, "GUP_FAST without FOLL_PCI_P2PDMA gets no page") { gup_bench(GUP_FAST_BENCHMARK, 0); }
CASE(gup_fast_p2p, "GUP_FAST with FOLL_PCI_P2PDMA gets every page") { gup_bench(GUP_FAST_BENCHMARK, FOLL_PCI_P2PDMA); }
CASE(pin_fast_plain, "PIN_FAST without FOLL_PCI_P2PDMA pins no page") { gup_bench(PIN_FAST_BENCHMARK, 0); }
CASE(pin_fast_p2p, "PIN_FAST with FOLL_PCI_P2PDMA pins every page") { gup_bench(PIN_FAST_BENCHMARK, FOLL_PCI_P2PDMA); }
CASE(gup_basic_plain, "GUP_BASIC (slow path) without FOLL_PCI_P2PDMA gets no page") { gup_bench(GUP_BASIC_TEST, 0); }
CASE(gup_basic_p2p, "GUP_BASIC with FOLL_PCI_P2PDMA gets every page") { gup_bench(GUP_BASIC_TEST, FOLL_PCI_P2PDMA); }
CASE(pin_basic_plain, "PIN_BASIC without FOLL_PCI_P2PDMA pins no page") { gup_bench(PIN_BASIC_TEST, 0); }
CASE(pin_basic_p2p_write, "PIN_BASIC with FOLL_PCI_P2PDMA|FOLL_WRITE pins every page")
{
	gup_bench(PIN_BASIC_TEST, FOLL_PCI_P2PDMA | FOLL_WRITE);
}

static void longterm(uint32_t flags)
{
	int gfd = gup_fd(), fd = p2p_open();
	char *p = p2p_map(fd, NPAGES * PAGE);
	if (p == MAP_FAILED)
		probe_fail("mmap");
	struct pin_longterm_test t = {.addr = (uintptr_t)p, .size = NPAGES * PAGE, .flags = flags};
	int rc = ioctl(gfd, PIN_LONGTERM_TEST_START, &t);
	obs_errno("start", rc ? errno : 0);
	if (rc == 0)
		ioctl(gfd, PIN_LONGTERM_TEST_STOP);
	munmap(p, NPAGES * PAGE);
	close(fd);
	close(gfd);
}

CASE(pin_longterm_read, "a long-term read pin of p2pmem is refused (EREMOTEIO)") { longterm(0); }
CASE(pin_longterm_write, "a long-term write pin is refused by the dirty-tracking check first (EFAULT)") { longterm(1); }
