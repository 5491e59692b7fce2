/* /sys/kernel/debug/gup_test (CONFIG_GUP_TEST; docs/behaviour.md section 3) and what it lets a probe see of
 * the kernel's own page state: DUMP_USER_PAGES_TEST prints dump_page() ("page: refcount:N mapcount:M ...",
 * "flags: 0x...(dirty|reserved|zone=...)") to the kernel log, which the probe reads back from /dev/kmsg.
 * Include after probe.h. */
#ifndef P2PDMA_RIG_GUP_TEST_H
#define P2PDMA_RIG_GUP_TEST_H

#include <sys/ioctl.h>
#include <sys/syscall.h>

/* mm/gup_test.h is not a UAPI header; layout from docs/behaviour.md section 3 (sizeof 80) */
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
#define PIN_LONGTERM_BENCHMARK  _IOWR('g', 3, struct gup_test)
#define GUP_BASIC_TEST          _IOWR('g', 4, struct gup_test)
#define PIN_BASIC_TEST          _IOWR('g', 5, struct gup_test)
#define DUMP_USER_PAGES_TEST    _IOWR('g', 6, struct gup_test)
#define PIN_LONGTERM_TEST_START _IOW('g', 7, struct pin_longterm_test)
#define PIN_LONGTERM_TEST_STOP  _IO('g', 8)
#define FOLL_WRITE 0x01
#define FOLL_PCI_P2PDMA 0x400
#define GUP_TEST_MAX_PAGES_TO_DUMP 8

static int gup_fd(void)
{
	int fd = open("/sys/kernel/debug/gup_test", O_RDWR);
	if (fd < 0)
		probe_skip("no /sys/kernel/debug/gup_test (CONFIG_GUP_TEST off or debugfs not mounted)");
	return fd;
}

/* one page as dump_page() showed it */
struct page_state {
	long refcount, mapcount;
	unsigned long pfn;
	int dirty; /* PG_dirty; -1 when the flags line was not seen */
};

/* dump_page() of the first n (<= 8) pages at addr, read back from the kernel log. DUMP_USER_PAGES_TEST takes
 * them with get_user_pages(FOLL_PCI_P2PDMA) (FOLL_GET|FOLL_TOUCH, never FOLL_WRITE: it sets no PG_dirty), so each
 * refcount includes the dump's own +1. Returns the number of pages parsed (n when all went well), -1 if the ioctl
 * failed or did not get every page. */
static int dump_user_pages(int gfd, const void *addr, int n, struct page_state *ps)
{
	int kfd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
	if (kfd < 0)
		return -1;
	lseek(kfd, 0, SEEK_END);
	struct gup_test g = {.addr = (uintptr_t)addr, .size = (uint64_t)n * PAGE, .nr_pages_per_call = 1,
			     .gup_flags = FOLL_PCI_P2PDMA};
	for (int i = 0; i < n && i < GUP_TEST_MAX_PAGES_TO_DUMP; i++)
		g.which_pages[i] = i + 1; /* 1-based */
	int got = -1;
	if (ioctl(gfd, DUMP_USER_PAGES_TEST, &g) == 0 && g.size == (uint64_t)n * PAGE) {
		char rec[2048];
		got = 0;
		for (;;) {
			ssize_t len = read(kfd, rec, sizeof(rec) - 1);
			if (len < 0 && errno == EPIPE) /* records were overwritten: go on with the next one */
				continue;
			if (len <= 0)
				break;
			rec[len] = 0;
			char *msg = strchr(rec, ';'); /* "prio,seq,usec,flags;text" */
			if (!msg)
				continue;
			msg++;
			if (!strncmp(msg, "page: refcount:", 15) && got < n) {
				struct page_state *s = &ps[got++];
				s->refcount = s->mapcount = -1;
				s->dirty = -1;
				sscanf(msg, "page: refcount:%ld mapcount:%ld", &s->refcount, &s->mapcount);
				char *pfn = strstr(msg, " pfn:");
				s->pfn = pfn ? strtoul(pfn + 5, NULL, 0) : 0;
			} else if (got > 0 && !strncmp(msg, "flags: 0x", 9)) {
				char *names = strchr(msg, '(');
				ps[got - 1].dirty = names && (strstr(names, "(dirty") || strstr(names, "|dirty"));
			}
		}
	}
	close(kfd);
	return got;
}

/* does this kernel have CONFIG_SECRETMEM? Then GUP-fast refuses every order-0 folio without a mapping, i.e. every
 * P2PDMA page, and the slow path serves them (docs/behaviour.md section 2) */
static int has_secretmem(void)
{
#ifndef SYS_memfd_secret
#define SYS_memfd_secret 447
#endif
	int fd = (int)syscall(SYS_memfd_secret, 0);
	if (fd >= 0)
		close(fd);
	return fd >= 0;
}

#endif
