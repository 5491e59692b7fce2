/* The NVMe driver as a P2PDMA user: passthrough commands with p2pmem buffers (p2pdma-behaviour.md sections 2
 * and 4: nvme_map_user_request -> blk_rq_map_user_io -> bio_map_user_iov, which asks GUP for P2PDMA pages only
 * if the request queue has BLK_FEAT_PCI_P2PDMA) and a controller reset under a live mapping (section 5:
 * nvme_map_cmb runs once; the CMB stays registered across resets). */
#define AREA "nvme"
#include "lib/probe.h"
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <linux/nvme_ioctl.h>
#include <linux/io_uring.h>

#define IO_LEN (64 * 1024)
#define NVME_CMD_WRITE 0x01
#define NVME_CMD_READ 0x02
#define NVME_ADMIN_IDENTIFY 0x06
/* where these cases keep their data on the provider's namespace (the odirect cases use 1-6 MiB) */
#define BASE_OFF (32 << 20)

static char ns_path[128];
static unsigned lba_size = 512;
static unsigned nsid = 1;

/* the provider's own namespace: an fd for the passthrough ioctls, its nsid and LBA size */
static int open_ns_passthru(void)
{
	if (p2p_nvme_namespace(ns_path, sizeof(ns_path)) < 0)
		probe_fail("the provider %s has no NVMe namespace", p2p_bdf);
	int fd = open(ns_path, O_RDWR);
	if (fd < 0)
		probe_fail("open %s", ns_path);
	int id = ioctl(fd, NVME_IOCTL_ID);
	if (id <= 0)
		probe_fail("NVME_IOCTL_ID on %s", ns_path);
	nsid = id;
	char path[256];
	snprintf(path, sizeof(path), "/sys/block/%s/queue/logical_block_size", ns_path + 5);
	long long l = read_ll(path);
	if (l > 0)
		lba_size = l;
	return fd;
}

static int open_ns_direct(void)
{
	int fd = open(ns_path, O_RDWR | O_DIRECT);
	if (fd < 0)
		probe_fail("open %s O_DIRECT", ns_path);
	return fd;
}

static unsigned char *map_p2p(int *pfd, size_t len)
{
	*pfd = p2p_open();
	unsigned char *p = p2p_map(*pfd, len);
	if (p == MAP_FAILED)
		probe_fail("mmap %zu bytes of p2pmem", len);
	return p;
}

static unsigned char *pattern(size_t len, unsigned seed)
{
	unsigned char *ram = aligned_alloc(PAGE, len);
	if (!ram)
		probe_fail("aligned_alloc");
	for (size_t i = 0; i < len; i++)
		ram[i] = (unsigned char)(i * 151 + (i >> 12) * 11 + seed * 37 + 5);
	return ram;
}

static unsigned char *ram_zeroed(size_t len)
{
	unsigned char *ram = aligned_alloc(PAGE, len);
	if (!ram)
		probe_fail("aligned_alloc");
	memset(ram, 0, len);
	return ram;
}

static int same(const volatile unsigned char *a, const unsigned char *b, size_t len)
{
	return hash_bytes(a, len) == hash_bytes(b, len);
}

/* ioctl result as the expectations compare it: the errno name, or OK; `status` is the NVMe status (> 0) */
static void obs_ioctl(const char *key, int rc, int err)
{
	obs_errno(key, rc < 0 ? err : 0);
	char skey[64];
	snprintf(skey, sizeof(skey), "%s_status", key);
	obs_int(skey, rc > 0 ? rc : 0);
}

/* NVME_IOCTL_IO_CMD read/write of `len` bytes at byte offset `off` */
static int io_cmd(int fd, int opcode, void *buf, size_t len, off_t off)
{
	struct nvme_passthru_cmd c = {0};
	uint64_t slba = off / lba_size;
	c.opcode = opcode;
	c.nsid = nsid;
	c.addr = (uintptr_t)buf;
	c.data_len = len;
	c.cdw10 = (uint32_t)slba;
	c.cdw11 = (uint32_t)(slba >> 32);
	c.cdw12 = len / lba_size - 1;
	return ioctl(fd, NVME_IOCTL_IO_CMD, &c);
}

/* NVME_IOCTL_SUBMIT_IO (struct nvme_user_io: nblocks is 0-based) */
static int submit_io(int fd, int opcode, void *buf, size_t len, off_t off)
{
	struct nvme_user_io io = {0};
	io.opcode = opcode;
	io.addr = (uintptr_t)buf;
	io.slba = off / lba_size;
	io.nblocks = len / lba_size - 1;
	return ioctl(fd, NVME_IOCTL_SUBMIT_IO, &io);
}

/* NVME_IOCTL_IO64_CMD_VEC: addr points at an iovec array, data_len is the number of vectors */
static int io64_vec(int fd, int opcode, struct iovec *iov, int n, size_t len, off_t off)
{
	struct nvme_passthru_cmd64 c = {0};
	uint64_t slba = off / lba_size;
	c.opcode = opcode;
	c.nsid = nsid;
	c.addr = (uintptr_t)iov;
	c.vec_cnt = n;
	c.cdw10 = (uint32_t)slba;
	c.cdw11 = (uint32_t)(slba >> 32);
	c.cdw12 = len / lba_size - 1;
	return ioctl(fd, NVME_IOCTL_IO64_CMD_VEC, &c);
}

/* ------------------------------------------------------------------ passthrough I/O (sections 2, 4) */

/* write from p2pmem by passthrough, read back by O_DIRECT into RAM: what reached the disk */
static void passthru_write(int (*issue)(int, int, void *, size_t, off_t), off_t off, unsigned seed)
{
	int fd = open_ns_passthru(), dfd = open_ns_direct(), pfd;
	unsigned char *ram = pattern(IO_LEN, seed), *back = ram_zeroed(IO_LEN);
	unsigned char *buf = map_p2p(&pfd, IO_LEN);
	p2p_copy(buf, ram, IO_LEN);
	/* something else on the disk first, so a write that did nothing cannot match */
	unsigned char *other = pattern(IO_LEN, seed + 100);
	if (pwrite(dfd, other, IO_LEN, off) != IO_LEN)
		probe_fail("O_DIRECT write of the old data from RAM");
	long long avail = p2p_available();
	errno = 0;
	int rc = issue(fd, NVME_CMD_WRITE, buf, IO_LEN, off);
	obs_ioctl("write", rc, errno);
	ssize_t r = pread(dfd, back, IO_LEN, off);
	obs_errno("read_back", r < 0 ? errno : 0);
	obs_bool("data_on_disk", r == IO_LEN && same(back, ram, IO_LEN));
	/* the pins of the passthrough request are released: the mapping's pages are still just mapped */
	obs_int("available_delta", p2p_available() - avail);
	munmap(buf, IO_LEN);
	close(pfd);
	close(dfd);
	close(fd);
	free(ram);
	free(back);
	free(other);
}

/* put a pattern on the disk by O_DIRECT from RAM, read it by passthrough into p2pmem */
static void passthru_read(int (*issue)(int, int, void *, size_t, off_t), off_t off, unsigned seed)
{
	int fd = open_ns_passthru(), dfd = open_ns_direct(), pfd;
	unsigned char *ram = pattern(IO_LEN, seed);
	if (pwrite(dfd, ram, IO_LEN, off) != IO_LEN)
		probe_fail("O_DIRECT write of the reference data from RAM");
	unsigned char *buf = map_p2p(&pfd, IO_LEN);
	p2p_zero(buf, IO_LEN);
	errno = 0;
	int rc = issue(fd, NVME_CMD_READ, buf, IO_LEN, off);
	obs_ioctl("read", rc, errno);
	obs_bool("data_match", same(buf, ram, IO_LEN));
	munmap(buf, IO_LEN);
	close(pfd);
	close(dfd);
	close(fd);
	free(ram);
}

CASE(io_cmd_write_from_p2pmem, "NVME_IOCTL_IO_CMD write from a p2pmem buffer to the provider's namespace: the data reaches the disk")
{
	passthru_write(io_cmd, BASE_OFF, 1);
}

CASE(io_cmd_read_into_p2pmem, "NVME_IOCTL_IO_CMD read from the provider's namespace into a p2pmem buffer, data intact")
{
	passthru_read(io_cmd, BASE_OFF + IO_LEN, 2);
}

CASE(submit_io_write_from_p2pmem, "NVME_IOCTL_SUBMIT_IO write from a p2pmem buffer: the data reaches the disk")
{
	passthru_write(submit_io, BASE_OFF + 2 * IO_LEN, 3);
}

CASE(submit_io_read_into_p2pmem, "NVME_IOCTL_SUBMIT_IO read into a p2pmem buffer, data intact")
{
	passthru_read(submit_io, BASE_OFF + 3 * IO_LEN, 4);
}

/* two iovecs over adjacent p2pmem pages: imported by import_iovec, extracted one vector at a time and merged
 * into one physically contiguous segment, so the command carries a single data block in the CMB */
CASE(io64_vec_read_into_p2pmem, "NVME_IOCTL_IO64_CMD_VEC read into two iovecs over adjacent p2pmem pages, data intact")
{
	int fd = open_ns_passthru(), dfd = open_ns_direct(), pfd;
	const off_t off = BASE_OFF + 4 * IO_LEN;
	unsigned char *ram = pattern(2 * PAGE, 5);
	if (pwrite(dfd, ram, 2 * PAGE, off) != 2 * (ssize_t)PAGE)
		probe_fail("O_DIRECT write of the reference data from RAM");
	unsigned char *buf = map_p2p(&pfd, 2 * PAGE);
	p2p_zero(buf, 2 * PAGE);
	struct iovec iov[2] = {{buf, PAGE}, {buf + PAGE, PAGE}};
	errno = 0;
	int rc = io64_vec(fd, NVME_CMD_READ, iov, 2, 2 * PAGE, off);
	obs_ioctl("read", rc, errno);
	obs_bool("data_match", same(buf, ram, 2 * PAGE));
	munmap(buf, 2 * PAGE);
	close(pfd);
	close(dfd);
	close(fd);
	free(ram);
}

/* [RAM page, p2pmem page] in one vectored passthrough read: page aligned with no gap, so the kernel maps both
 * pages directly (no bounce) and sends ONE command with two data descriptors, one in host memory and one in
 * the controller's own CMB (6.12 describes user commands by SGL when the controller has SGLs,
 * nvme_pci_use_sgls; the descriptor list itself sits in host memory). QEMU 7.2 fails such a command with
 * Invalid Use of Controller Memory Buffer (nvme_map_addr), as for odirect.preadv_ram_then_p2pmem: a QEMU
 * artefact, not a kernel bug. The status proves the p2pmem page reached the device as a CMB address; a kernel
 * that bounced the buffer through RAM would see the command succeed. */
CASE(io64_vec_ram_then_p2pmem, "NVME_IOCTL_IO64_CMD_VEC read into [RAM page, p2pmem page]: the p2pmem page goes to the device zero-copy")
{
	int fd = open_ns_passthru(), pfd;
	const off_t off = BASE_OFF + 5 * IO_LEN;
	char knob[256], old[16] = "off";
	snprintf(knob, sizeof(knob), "/sys/block/%s/passthru_err_log_enabled", ns_path + 5);
	read_file(knob, old, sizeof(old));
	/* passthrough errors are not logged unless asked for */
	write_file(knob, "on");
	unsigned char *ram = ram_zeroed(PAGE);
	unsigned char *buf = map_p2p(&pfd, PAGE);
	struct iovec iov[2] = {{ram, PAGE}, {buf, PAGE}};
	errno = 0;
	int rc = io64_vec(fd, NVME_CMD_READ, iov, 2, 2 * PAGE, off);
	obs_ioctl("read", rc, errno);
	char hex[16];
	snprintf(hex, sizeof(hex), "0x%x", rc > 0 ? rc : 0);
	obs_str("read_status_hex", hex);
	write_file(knob, old);
	munmap(buf, PAGE);
	close(pfd);
	close(fd);
	free(ram);
}

/* a buffer 2 bytes into p2pmem breaks the queue's DMA alignment (4): blk_rq_map_user_iov bounces through a
 * kernel buffer (bio_copy_user_iov, a CPU copy from/to p2pmem), so the write and the read work (section 4) */
CASE(io_cmd_misaligned_bounce, "NVME_IOCTL_IO_CMD with a p2pmem buffer off the DMA alignment: bounced through a kernel copy, data intact both ways")
{
	int fd = open_ns_passthru(), dfd = open_ns_direct(), pfd;
	const off_t off = BASE_OFF + 6 * IO_LEN;
	const size_t len = 4 * PAGE;
	unsigned char *ram = pattern(len, 6), *back = ram_zeroed(len);
	unsigned char *buf = map_p2p(&pfd, len + PAGE);
	volatile unsigned char *mis = buf + 2;
	for (size_t i = 0; i < len; i++)
		mis[i] = ram[i];
	errno = 0;
	int rc = io_cmd(fd, NVME_CMD_WRITE, (void *)mis, len, off);
	obs_ioctl("write", rc, errno);
	ssize_t r = pread(dfd, back, len, off);
	obs_bool("data_on_disk", r == (ssize_t)len && !memcmp(back, ram, len));
	p2p_zero(buf, len + PAGE);
	errno = 0;
	rc = io_cmd(fd, NVME_CMD_READ, (void *)mis, len, off);
	obs_ioctl("read", rc, errno);
	int ok = 1;
	for (size_t i = 0; i < len && ok; i++)
		ok = mis[i] == ram[i];
	obs_bool("data_match", ok);
	munmap(buf, len + PAGE);
	close(pfd);
	close(dfd);
	close(fd);
	free(ram);
	free(back);
}

/* the admin queue is not a P2PDMA client (no BLK_FEAT_PCI_P2PDMA): Identify into p2pmem is refused by GUP */
CASE(admin_identify_into_p2pmem, "NVME_IOCTL_ADMIN_CMD Identify into a p2pmem buffer is refused (EREMOTEIO), into RAM it works")
{
	int fd = open_ns_passthru(), pfd;
	unsigned char *ram = ram_zeroed(PAGE);
	unsigned char *buf = map_p2p(&pfd, PAGE);
	/* a marker that an Identify Controller structure never holds at its start (VID/SSVID of QEMU: 1b36) */
	memset(ram, 0, PAGE);
	for (size_t i = 0; i < PAGE / 8; i++)
		((volatile uint64_t *)buf)[i] = 0x5a5a5a5a5a5a5a5aULL;
	struct nvme_admin_cmd c = {.opcode = NVME_ADMIN_IDENTIFY, .addr = (uintptr_t)ram, .data_len = PAGE,
				   .cdw10 = 1 /* CNS 1: Identify Controller */};
	errno = 0;
	int rc = ioctl(fd, NVME_IOCTL_ADMIN_CMD, &c);
	obs_ioctl("identify_ram", rc, errno);
	obs_int("ram_vid", ram[0] | ram[1] << 8);
	c.addr = (uintptr_t)buf;
	errno = 0;
	rc = ioctl(fd, NVME_IOCTL_ADMIN_CMD, &c);
	obs_ioctl("identify_p2pmem", rc, errno);
	int untouched = 1;
	for (size_t i = 0; i < PAGE / 8 && untouched; i++)
		untouched = ((volatile uint64_t *)buf)[i] == 0x5a5a5a5a5a5a5a5aULL;
	obs_bool("p2pmem_untouched", untouched);
	munmap(buf, PAGE);
	close(pfd);
	close(fd);
	free(ram);
}

/* ------------------------------------------------------------------ io_uring passthrough (uring_cmd) */

/* one IORING_OP_URING_CMD NVME_URING_CMD_IO on the namespace's generic char device /dev/ngXnY (SQE128 +
 * CQE32 rings, no liburing in the guest): the CQE's res (0, an NVMe status > 0, or -errno) */
static long uring_cmd(int fd, int opcode, void *buf, unsigned len, off_t off)
{
	struct io_uring_params p = {.flags = IORING_SETUP_SQE128 | IORING_SETUP_CQE32};
	int rfd = syscall(SYS_io_uring_setup, 2, &p);
	if (rfd < 0) {
		if (errno == ENOSYS)
			probe_skip("no io_uring in this kernel (CONFIG_IO_URING off)");
		probe_fail("io_uring_setup with SQE128|CQE32");
	}
	const size_t sqe_size = 128, cqe_size = 32;
	size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	size_t cq_len = p.cq_off.cqes + p.cq_entries * cqe_size;
	int single = p.features & IORING_FEAT_SINGLE_MMAP;
	if (single)
		sq_len = cq_len = sq_len > cq_len ? sq_len : cq_len;
	char *sq = mmap(NULL, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED, rfd, IORING_OFF_SQ_RING);
	char *cq = single ? sq : mmap(NULL, cq_len, PROT_READ | PROT_WRITE, MAP_SHARED, rfd, IORING_OFF_CQ_RING);
	char *sqes = mmap(NULL, p.sq_entries * sqe_size, PROT_READ | PROT_WRITE, MAP_SHARED, rfd, IORING_OFF_SQES);
	if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED)
		probe_fail("mmap of the io_uring rings");
	unsigned *sq_tail = (unsigned *)(sq + p.sq_off.tail), *cq_head = (unsigned *)(cq + p.cq_off.head);
	unsigned tail = *sq_tail, idx = tail & *(unsigned *)(sq + p.sq_off.ring_mask);
	struct io_uring_sqe *e = (struct io_uring_sqe *)(sqes + idx * sqe_size);
	memset(e, 0, sqe_size);
	e->opcode = IORING_OP_URING_CMD;
	e->fd = fd;
	e->cmd_op = NVME_URING_CMD_IO;
	struct nvme_uring_cmd *c = (struct nvme_uring_cmd *)e->cmd;
	uint64_t slba = off / lba_size;
	c->opcode = opcode;
	c->nsid = nsid;
	c->addr = (uintptr_t)buf;
	c->data_len = len;
	c->cdw10 = (uint32_t)slba;
	c->cdw11 = (uint32_t)(slba >> 32);
	c->cdw12 = len / lba_size - 1;
	((unsigned *)(sq + p.sq_off.array))[idx] = idx;
	__atomic_store_n(sq_tail, tail + 1, __ATOMIC_RELEASE);
	if (syscall(SYS_io_uring_enter, rfd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
		probe_fail("io_uring_enter");
	unsigned head = *cq_head;
	if (head == __atomic_load_n((unsigned *)(cq + p.cq_off.tail), __ATOMIC_ACQUIRE))
		probe_fail("io_uring_enter returned without a completion");
	struct io_uring_cqe *cqe =
		(struct io_uring_cqe *)(cq + p.cq_off.cqes + (head & *(unsigned *)(cq + p.cq_off.ring_mask)) * cqe_size);
	long res = cqe->res;
	__atomic_store_n(cq_head, head + 1, __ATOMIC_RELEASE);
	munmap(sqes, p.sq_entries * sqe_size);
	if (!single)
		munmap(cq, cq_len);
	munmap(sq, sq_len);
	close(rfd);
	return res;
}

static int open_ng(void)
{
	char ng[160];
	/* /dev/nvme0n1 -> /dev/ng0n1 */
	snprintf(ng, sizeof(ng), "/dev/ng%s", ns_path + strlen("/dev/nvme"));
	int fd = open(ng, O_RDWR);
	if (fd < 0)
		probe_fail("open %s (the namespace's generic char device)", ng);
	return fd;
}

CASE(uring_cmd_read_into_p2pmem, "io_uring NVME_URING_CMD_IO read (generic char device) into a p2pmem buffer, data intact")
{
	close(open_ns_passthru());
	int fd = open_ng(), dfd = open_ns_direct(), pfd;
	const off_t off = BASE_OFF + 7 * IO_LEN;
	unsigned char *ram = pattern(IO_LEN, 7);
	if (pwrite(dfd, ram, IO_LEN, off) != IO_LEN)
		probe_fail("O_DIRECT write of the reference data from RAM");
	unsigned char *buf = map_p2p(&pfd, IO_LEN);
	p2p_zero(buf, IO_LEN);
	long res = uring_cmd(fd, NVME_CMD_READ, buf, IO_LEN, off);
	obs_errno("read", res < 0 ? (int)-res : 0);
	obs_int("read_status", res > 0 ? res : 0);
	obs_bool("data_match", same(buf, ram, IO_LEN));
	munmap(buf, IO_LEN);
	close(pfd);
	close(dfd);
	close(fd);
	free(ram);
}

CASE(uring_cmd_write_from_p2pmem, "io_uring NVME_URING_CMD_IO write from a p2pmem buffer: the data reaches the disk")
{
	close(open_ns_passthru());
	int fd = open_ng(), dfd = open_ns_direct(), pfd;
	const off_t off = BASE_OFF + 8 * IO_LEN;
	unsigned char *ram = pattern(IO_LEN, 8), *back = ram_zeroed(IO_LEN), *other = pattern(IO_LEN, 108);
	if (pwrite(dfd, other, IO_LEN, off) != IO_LEN)
		probe_fail("O_DIRECT write of the old data from RAM");
	unsigned char *buf = map_p2p(&pfd, IO_LEN);
	p2p_copy(buf, ram, IO_LEN);
	long res = uring_cmd(fd, NVME_CMD_WRITE, buf, IO_LEN, off);
	obs_errno("write", res < 0 ? (int)-res : 0);
	obs_int("write_status", res > 0 ? res : 0);
	ssize_t r = pread(dfd, back, IO_LEN, off);
	obs_bool("data_on_disk", r == IO_LEN && same(back, ram, IO_LEN));
	munmap(buf, IO_LEN);
	close(pfd);
	close(dfd);
	close(fd);
	free(ram);
	free(back);
	free(other);
}

/* ------------------------------------------------------------------ reset under a live mapping (section 5) */

static void ctrl_dir(char *out, size_t len)
{
	char pat[512];
	glob_t g;
	snprintf(pat, sizeof(pat), "%s/nvme/nvme*", p2p_dev);
	if (glob(pat, 0, NULL, &g) != 0 || g.gl_pathc == 0)
		probe_fail("the provider %s has no nvme controller directory", p2p_bdf);
	snprintf(out, len, "%s", g.gl_pathv[0]);
	globfree(&g);
}

static int wait_live(const char *ctrl, int timeout_ms)
{
	char path[600], state[32];
	snprintf(path, sizeof(path), "%s/state", ctrl);
	for (int t = 0; t < timeout_ms; t += 50) {
		if (read_file(path, state, sizeof(state)) > 0 && !strncmp(state, "live", 4))
			return 0;
		usleep(50000);
	}
	return -1;
}

/* the controller's CMBMSC register (BAR0 + 0x50) as the device holds it, read through the sysfs resource0
 * mapping of BAR0: CRE (bit 0), CMSE (bit 1) and the CMB's controller base address (bits 63:12). -1 if the
 * register cannot be read */
static long long read_cmbmsc(void)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/resource0", p2p_dev);
	int fd = open(path, O_RDWR | O_SYNC);
	if (fd < 0)
		return -1;
	volatile uint32_t *regs = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (regs == MAP_FAILED)
		return -1;
	long long v = (long long)regs[0x50 / 4] | (long long)regs[0x54 / 4] << 32;
	munmap((void *)regs, PAGE);
	return v;
}

/* the bus address of BAR2 (the CMB) from the resource file: what CMBMSC.CBA must hold */
static long long bar2_start(void)
{
	char path[512], res[1024];
	snprintf(path, sizeof(path), "%s/resource", p2p_dev);
	if (read_file(path, res, sizeof(res)) < 0)
		return -1;
	char *line = res;
	for (int i = 0; i < 2 && line; i++)
		if ((line = strchr(line, '\n')))
			line++;
	return line ? strtoll(line, NULL, 16) : -1;
}

/* map 64 KiB holding a pattern, reset, then look at the mapping, the pool and I/O through the old mapping */
static void reset_while_mapped(const char *how)
{
	char ctrl[512], path[600];
	ctrl_dir(ctrl, sizeof(ctrl));
	int pfd;
	long long size0 = p2p_attr("size"), avail0 = p2p_available();
	unsigned char *ram = pattern(IO_LEN, 9);
	unsigned char *buf = map_p2p(&pfd, 2 * IO_LEN);
	p2p_copy(buf, ram, IO_LEN);
	long long avail_mapped = p2p_available();
	long long read_cmbmsc_before = read_cmbmsc();

	int rc;
	if (!strcmp(how, "ctrl")) {
		snprintf(path, sizeof(path), "%s/reset_controller", ctrl);
		rc = write_file(path, "1");
	} else {
		char method[64] = "";
		snprintf(path, sizeof(path), "%s/reset_method", p2p_dev);
		read_file(path, method, sizeof(method));
		method[strcspn(method, "\n")] = 0;
		obs_str("reset_method", method);
		snprintf(path, sizeof(path), "%s/reset", p2p_dev);
		rc = write_file(path, "1");
	}
	obs_errno("reset", rc < 0 ? errno : 0);
	/* a PCI function reset schedules the controller reset asynchronously (nvme_reset_done) */
	obs_bool("live_after_reset", wait_live(ctrl, 30000) == 0);

	/* nvme_map_cmb() does not run its body again after a reset: what the controller holds now */
	long long before = read_cmbmsc_before, after = read_cmbmsc();
	obs_bool("cmbmsc_readable", before >= 0 && after >= 0);
	obs_bool("cmbmsc_kept", before == after);
	obs_int("cmbmsc_enabled_after", after >= 0 ? after & 3 : -1);
	obs_bool("cmbmsc_cba_is_bar2", after >= 0 && (after & ~0xfffLL) == bar2_start());
	obs_bool("mapping_data_kept", same(buf, ram, IO_LEN));
	obs_int("available_delta", p2p_available() - avail_mapped);
	obs_int("size_delta", p2p_attr("size") - size0);
	obs_int("published", p2p_attr("published"));

	/* O_DIRECT through the mapping made before the reset, both directions, on the provider's own namespace */
	close(open_ns_passthru());
	int dfd = open_ns_direct();
	const off_t off = BASE_OFF + (how[0] == 'c' ? 9 : 10) * IO_LEN;
	ssize_t w = pwrite(dfd, buf, IO_LEN, off);
	obs_errno("dio_write_from_old_mapping", w < 0 ? errno : 0);
	unsigned char *back = ram_zeroed(IO_LEN);
	int rfd = open(ns_path, O_RDONLY | O_DIRECT);
	ssize_t r = pread(rfd, back, IO_LEN, off);
	obs_bool("disk_has_pattern", w == IO_LEN && r == IO_LEN && same(back, ram, IO_LEN));
	close(rfd);
	unsigned char *in = buf + IO_LEN;
	p2p_zero(in, IO_LEN);
	r = pread(dfd, in, IO_LEN, off);
	obs_errno("dio_read_into_old_mapping", r < 0 ? errno : 0);
	obs_bool("dio_read_data_match", r == IO_LEN && same(in, ram, IO_LEN));
	close(dfd);

	munmap(buf, 2 * IO_LEN);
	close(pfd);
	obs_int("available_restored_delta", p2p_available() - avail0);
	free(ram);
	free(back);
}

CASE(reset_controller_while_mapped, "controller reset (reset_controller) while p2pmem is mapped: mapping, pool, publication and O_DIRECT survive")
{
	reset_while_mapped("ctrl");
}

CASE(function_reset_while_mapped, "PCI function reset of the provider (sysfs reset) while p2pmem is mapped: mapping, pool, publication and O_DIRECT survive")
{
	reset_while_mapped("pci");
}

/* ------------------------------------------------------------------ namespaces with metadata (topology metadata)
 * The provider's (controller 4's) namespace has 8 bytes of metadata per block, all of it protection information (PI type 1) in
 * a buffer of its own (MPTR, not extended LBAs): the block layer generates and checks the PI of O_DIRECT (the
 * CPU reads the p2pmem data to compute the guard CRC), passthrough carries a metadata buffer the program gives. */
#define META_BLOCKS 16

/* what the kernel made of the namespace: its metadata bytes per block, and the block layer's integrity profile */
static void obs_ns_integrity(void)
{
	char path[256], format[64] = "none";
	snprintf(path, sizeof(path), "/sys/block/%s/metadata_bytes", ns_path + 5);
	obs_int("metadata_bytes", read_ll(path));
	snprintf(path, sizeof(path), "/sys/block/%s/integrity/format", ns_path + 5);
	if (read_file(path, format, sizeof(format)) > 0)
		format[strcspn(format, "\n")] = 0;
	obs_str("integrity_format", format);
}

/* the provider of these cases: controller 4 of the features topology, whose namespace has the metadata */
#define META_CTRL 4

CASE(meta_dio_p2pmem, "namespace with PI metadata: O_DIRECT write from and read into p2pmem, the block layer's PI generated and checked, data intact")
{
	p2p_use_ctrl(META_CTRL);
	int pfd, fd = open_ns_passthru();
	close(fd);
	obs_ns_integrity();
	fd = open_ns_direct();
	unsigned char *ref = pattern(IO_LEN, 21);
	unsigned char *buf = map_p2p(&pfd, 2 * IO_LEN);
	p2p_copy(buf, ref, IO_LEN);
	p2p_zero(buf + IO_LEN, IO_LEN);
	ssize_t w = pwrite(fd, buf, IO_LEN, BASE_OFF);
	obs_errno("write", w < 0 ? errno : 0);
	ssize_t r = pread(fd, buf + IO_LEN, IO_LEN, BASE_OFF);
	obs_errno("read", r < 0 ? errno : 0);
	obs_bool("data_match", r == IO_LEN && same(buf + IO_LEN, ref, IO_LEN));
	munmap(buf, 2 * IO_LEN);
	close(pfd);
	close(fd);
	free(ref);
}

/* NVME_IOCTL_IO_CMD of META_BLOCKS blocks with data and metadata each in p2pmem or RAM; PRINFO 0: the device
 * stores the metadata as given (no PI check) */
static void meta_passthru(int data_in_p2pmem, int meta_in_p2pmem)
{
	p2p_use_ctrl(META_CTRL);
	int pfd, fd = open_ns_passthru();
	size_t data_len = META_BLOCKS * lba_size, meta_len = META_BLOCKS * 8;
	unsigned char *p2p = map_p2p(&pfd, 4 * PAGE + 2 * data_len);
	unsigned char *data_ref = pattern(data_len, 3), *meta_ref = pattern(PAGE, 4);
	unsigned char *data_ram = ram_zeroed(2 * data_len), *meta_ram = ram_zeroed(2 * PAGE);
	/* p2pmem: [meta out][meta in][data out][data in] */
	unsigned char *meta_out = meta_in_p2pmem ? p2p : meta_ram, *meta_in = meta_in_p2pmem ? p2p + PAGE : meta_ram + PAGE;
	unsigned char *data_out = data_in_p2pmem ? p2p + 4 * PAGE : data_ram;
	unsigned char *data_in = data_in_p2pmem ? p2p + 4 * PAGE + data_len : data_ram + data_len;
	p2p_zero(p2p, 4 * PAGE + 2 * data_len);
	if (meta_in_p2pmem)
		p2p_copy(meta_out, meta_ref, PAGE);
	else
		memcpy(meta_out, meta_ref, meta_len);
	if (data_in_p2pmem)
		p2p_copy(data_out, data_ref, data_len);
	else
		memcpy(data_out, data_ref, data_len);
	struct nvme_passthru_cmd c = {.opcode = NVME_CMD_WRITE, .nsid = nsid, .addr = (uintptr_t)data_out,
				      .data_len = data_len, .metadata = (uintptr_t)meta_out, .metadata_len = meta_len,
				      .cdw10 = (BASE_OFF + (8 << 20)) / lba_size, .cdw12 = META_BLOCKS - 1};
	errno = 0;
	int rc = ioctl(fd, NVME_IOCTL_IO_CMD, &c);
	obs_errno("write", rc < 0 ? errno : 0);
	obs_int("write_status", rc > 0 ? rc : 0);
	c.opcode = NVME_CMD_READ;
	c.addr = (uintptr_t)data_in;
	c.metadata = (uintptr_t)meta_in;
	errno = 0;
	rc = ioctl(fd, NVME_IOCTL_IO_CMD, &c);
	obs_errno("read", rc < 0 ? errno : 0);
	obs_int("read_status", rc > 0 ? rc : 0);
	obs_bool("data_match", same(data_in, data_ref, data_len));
	obs_bool("metadata_match", same(meta_in, meta_ref, meta_len));
	munmap(p2p, 4 * PAGE + 2 * data_len);
	close(pfd);
	close(fd);
	free(data_ref);
	free(meta_ref);
	free(data_ram);
	free(meta_ram);
}

CASE(meta_passthru_meta_in_p2pmem, "NVMe passthrough write and read with the metadata buffer in p2pmem (data in RAM): data and metadata intact")
{
	meta_passthru(0, 1);
}

CASE(meta_passthru_data_in_p2pmem, "NVMe passthrough write and read with the data in p2pmem and the metadata buffer in RAM: data and metadata intact")
{
	meta_passthru(1, 0);
}
