/* P2P between the provider's CMB and ANOTHER NVMe (the peer as DMA client), by topology
 * (docs/behaviour.md sections 6 and 8.2). Each case runs in the topology expectations.yaml names. */
#define AREA "peer"
#include "lib/probe.h"
#include <pthread.h>
#include <sys/uio.h>
#include <sys/ioctl.h>
#include <linux/nvme_ioctl.h>

#define IO_LEN (64 * 1024)

/* /dev/nvmeXnY of an NVMe controller other than the provider */
static void peer_namespace(char *out, size_t len)
{
	glob_t g;
	if (glob("/sys/bus/pci/devices/*/nvme/nvme*/nvme*n1", 0, NULL, &g) != 0)
		probe_skip("no NVMe namespace at all");
	for (size_t i = 0; i < g.gl_pathc; i++) {
		if (strstr(g.gl_pathv[i], p2p_bdf))
			continue;
		snprintf(out, len, "/dev/%s", strrchr(g.gl_pathv[i], '/') + 1);
		globfree(&g);
		return;
	}
	globfree(&g);
	probe_skip("no peer NVMe besides the provider %s (this case needs a two-NVMe topology)", p2p_bdf);
}

static int open_peer(int flags)
{
	char ns[128];
	peer_namespace(ns, sizeof(ns));
	int fd = open(ns, flags | O_DIRECT);
	if (fd < 0)
		probe_fail("open %s", ns);
	return fd;
}

static void peer_roundtrip(void)
{
	char ns[128];
	peer_namespace(ns, sizeof(ns));
	dio_roundtrip(ns, IO_LEN);
}

CASE(switch_dio, "O_DIRECT between p2pmem and a peer NVMe under the same PCIe switch works, data intact")
{
	peer_roundtrip();
}

/* the guest CPU's vendor and family as Linux decoded them (cpu_supports_p2pdma() reads the same cpu_data(0)):
 * proves the topology's -cpu model is what the kernel saw */
static void obs_cpu(void)
{
	char info[8192], *p;
	if (read_file("/proc/cpuinfo", info, sizeof(info)) < 0)
		probe_fail("read /proc/cpuinfo");
	p = strstr(info, "vendor_id");
	if (p && (p = strchr(p, ':'))) {
		char vendor[32] = "";
		sscanf(p + 1, " %31s", vendor);
		obs_str("cpu_vendor", vendor);
	}
	p = strstr(info, "cpu family");
	if (p && (p = strchr(p, ':')))
		obs_int("cpu_family", strtol(p + 1, NULL, 10));
}

/* a root-complex peer: whether P2P goes through the host bridge is cpu_supports_p2pdma() or the host bridge
 * whitelist (section 6); QEMU's q35 host bridge (8086:29c0) is not whitelisted, so the CPU decides */
static void rootbus_roundtrip(void)
{
	obs_cpu();
	peer_roundtrip();
}

CASE(rootbus_intel_dio, "root-complex peer with an Intel CPU model: P2P refused with EREMOTEIO")
{
	rootbus_roundtrip();
}

CASE(rootbus_amd_dio, "root-complex peer with an AMD family 0x17 CPU model: P2P through the host bridge works")
{
	rootbus_roundtrip();
}

CASE(rootbus_opteron_dio, "root-complex peer with an AMD family 0x15 CPU model (Opteron_G5, pre-Zen): P2P refused with EREMOTEIO")
{
	rootbus_roundtrip();
}

CASE(rootbus_milan_dio, "root-complex peer with an AMD family 0x19 CPU model (EPYC-Milan): P2P through the host bridge works")
{
	rootbus_roundtrip();
}

CASE(rootbus_hygon_dio, "root-complex peer with a Hygon family 0x18 CPU model (Dhyana): P2P refused, only AMD's vendor ID is trusted")
{
	rootbus_roundtrip();
}

/* NVME_IOCTL_IO_CMD write from p2pmem to the peer's namespace, read back by O_DIRECT into RAM; then a pattern
 * written from RAM read by NVME_IOCTL_IO_CMD into p2pmem. The passthrough request is mapped by
 * blk_rq_map_user_io like the provider's own (nvme area), but DMA-mapped for the peer: pci_p2pdma_map_type()
 * decides as for O_DIRECT, and a refused mapping ends the request with BLK_STS_TARGET -> EREMOTEIO. */
static void peer_passthru(void)
{
	char ns[128], path[256];
	peer_namespace(ns, sizeof(ns));
	int fd = open(ns, O_RDWR), dfd = open(ns, O_RDWR | O_DIRECT);
	if (fd < 0 || dfd < 0)
		probe_fail("open %s", ns);
	int nsid = ioctl(fd, NVME_IOCTL_ID);
	snprintf(path, sizeof(path), "/sys/block/%s/queue/logical_block_size", ns + 5);
	long long lba = read_ll(path);
	if (nsid <= 0 || lba <= 0)
		probe_fail("NVME_IOCTL_ID / logical_block_size of %s", ns);
	int pfd = p2p_open();
	unsigned char *buf = p2p_map(pfd, IO_LEN);
	if (buf == MAP_FAILED)
		probe_fail("mmap");
	unsigned char *ram = aligned_alloc(PAGE, IO_LEN), *back = aligned_alloc(PAGE, IO_LEN);
	const off_t off = 8 << 20;

	for (size_t i = 0; i < IO_LEN; i++)
		ram[i] = (unsigned char)(i * 17 + 9);
	memset(back, 0, IO_LEN);
	if (pwrite(dfd, back, IO_LEN, off) != IO_LEN)
		probe_fail("O_DIRECT write of zeros from RAM");
	for (size_t i = 0; i < IO_LEN / 8; i++)
		((volatile uint64_t *)buf)[i] = ((uint64_t *)ram)[i];
	struct nvme_passthru_cmd c = {.opcode = 0x01 /* write */, .nsid = nsid, .addr = (uintptr_t)buf,
				      .data_len = IO_LEN, .cdw10 = off / lba, .cdw12 = IO_LEN / lba - 1};
	errno = 0;
	int rc = ioctl(fd, NVME_IOCTL_IO_CMD, &c);
	obs_errno("write", rc < 0 ? errno : 0);
	obs_int("write_status", rc > 0 ? rc : 0);
	ssize_t r = pread(dfd, back, IO_LEN, off);
	obs_bool("data_on_disk", r == IO_LEN && !memcmp(back, ram, IO_LEN));

	for (size_t i = 0; i < IO_LEN; i++)
		ram[i] = (unsigned char)(i * 29 + 3);
	if (pwrite(dfd, ram, IO_LEN, off) != IO_LEN)
		probe_fail("O_DIRECT write of the reference data from RAM");
	for (size_t i = 0; i < IO_LEN / 8; i++)
		((volatile uint64_t *)buf)[i] = 0;
	c.opcode = 0x02; /* read */
	errno = 0;
	rc = ioctl(fd, NVME_IOCTL_IO_CMD, &c);
	obs_errno("read", rc < 0 ? errno : 0);
	obs_int("read_status", rc > 0 ? rc : 0);
	obs_bool("data_match", hash_bytes(buf, IO_LEN) == hash_bytes(ram, IO_LEN));
	munmap(buf, IO_LEN);
	close(pfd);
	close(dfd);
	close(fd);
	free(ram);
	free(back);
}

CASE(switch_passthru, "NVME_IOCTL_IO_CMD between p2pmem and a peer NVMe under the same PCIe switch works, data intact both ways")
{
	peer_passthru();
}

CASE(rootbus_intel_passthru, "NVME_IOCTL_IO_CMD with p2pmem on a root-complex peer, Intel CPU model: refused with EREMOTEIO")
{
	obs_cpu();
	peer_passthru();
}

/* one page of p2pmem of controller `index` (a provider of the providers topology) */
static unsigned char *p2p_page_of(int index, int *pfd)
{
	p2p_use_ctrl(index);
	*pfd = p2p_open();
	unsigned char *p = p2p_map(*pfd, PAGE);
	if (p == MAP_FAILED)
		probe_fail("mmap a page of controller %d's p2pmem", index);
	return p;
}

CASE(two_providers_one_unreachable, "O_DIRECT to a peer from (and into) two p2pmem pages: one of a provider under the peer's switch, one of a provider on the root complex, unreachable with the Intel model; in both orders")
{
	char ns[128];
	if (nvme_ctrl_namespace(1, ns, sizeof(ns)) < 0)
		probe_skip("no NVMe controller 1 (this case needs the features topology)");
	int fd = open(ns, O_RDWR | O_DIRECT);
	if (fd < 0)
		probe_fail("open %s", ns);
	int pfd_far, pfd_near;
	unsigned char *far = p2p_page_of(2, &pfd_far), *near = p2p_page_of(0, &pfd_near);
	/* `write`/`read`: the unreachable page first; `*_reachable_first`: the reachable one first */
	struct iovec far_first[2] = {{far, PAGE}, {near, PAGE}}, near_first[2] = {{near, PAGE}, {far, PAGE}};
	struct { const char *name; struct iovec *iov; int write; } io[] = {
		{"write", far_first, 1}, {"read", far_first, 0},
		{"write_reachable_first", near_first, 1}, {"read_reachable_first", near_first, 0}};
	char key[64];
	for (size_t i = 0; i < sizeof(io) / sizeof(io[0]); i++) {
		errno = 0;
		ssize_t n = io[i].write ? pwritev(fd, io[i].iov, 2, 0) : preadv(fd, io[i].iov, 2, 0);
		obs_errno(io[i].name, n < 0 ? errno : 0);
		snprintf(key, sizeof(key), "%s_bytes", io[i].name);
		obs_int(key, n < 0 ? 0 : n);
	}
	munmap(far, PAGE);
	munmap(near, PAGE);
	close(pfd_far);
	close(pfd_near);
	close(fd);
}

struct inflight {
	int fd;
	void *buf;
	size_t len;
	ssize_t ret;
	int err;
	double done_at;
};

static void *do_read(void *arg)
{
	struct inflight *io = arg;
	io->ret = pread(io->fd, io->buf, io->len, 0);
	io->err = io->ret < 0 ? errno : 0;
	io->done_at = now_s();
	return NULL;
}

static void unbind_during_peer_dio(int pages);

CASE(unbind_during_peer_dio, "unbind of the provider while a peer's O_DIRECT into p2pmem is in flight waits for it")
{
	unbind_during_peer_dio(2);
}

/* the same with the hung-task detector at 3 s: unbind blocks in memunmap_pages longer than that, so the
 * kernel reports a hung task (a rig self-test of its hung-task detection; manual) */
CASE(unbind_inflight_hung_task, "as unbind_during_peer_dio, with hung_task_timeout_secs=3: a hung-task report")
{
	char old[32] = "120";
	read_file("/proc/sys/kernel/hung_task_timeout_secs", old, sizeof(old));
	write_file("/proc/sys/kernel/hung_task_timeout_secs", "3");
	unbind_during_peer_dio(4); /* unbind blocked about 7.5 s: across two of khungtaskd's 3 s checks */
	write_file("/proc/sys/kernel/hung_task_timeout_secs", old);
}

static void unbind_during_peer_dio(int pages)
{
	int fd = open_peer(O_RDONLY);
	int pfd = p2p_open();
	long long avail = p2p_available();
	size_t len = pages * PAGE; /* QEMU bounces P2P one page per backend request: one slow (2 s) request each */
	void *buf = p2p_map(pfd, len);
	if (buf == MAP_FAILED)
		probe_fail("mmap");
	struct inflight io = {.fd = fd, .buf = buf, .len = len};
	pthread_t t;
	double t0 = now_s();
	pthread_create(&t, NULL, do_read, &io);
	usleep(500000);
	double u0 = now_s();
	int rc = p2p_unbind();
	double unbind_done = now_s();
	obs_errno("unbind", rc < 0 ? errno : 0);
	pthread_join(t, NULL);
	obs_errno("inflight_read", io.err);
	obs_int("inflight_read_bytes", io.ret);
	obs_bool("read_was_in_flight_at_unbind", io.done_at > u0);
	/* the pages were pinned by the I/O: unbind must not return before the I/O completed */
	obs_bool("unbind_waited_for_io", unbind_done >= io.done_at);
	obs_int("io_seconds", (long long)(io.done_at - t0 + 0.5));
	ssize_t again = pread(fd, buf, PAGE, 0);
	obs_errno("old_buffer_read_after_unbind", again < 0 ? errno : 0);
	munmap(buf, len);
	close(pfd);
	close(fd);
	rc = p2p_bind();
	obs_errno("rebind", rc < 0 ? errno : 0);
	obs_int("rebind_available_delta", rc < 0 ? -1 : p2p_available() - avail);
}
