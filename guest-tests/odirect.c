/* O_DIRECT I/O with a p2pmem buffer (docs/behaviour.md sections 2 and 4). */
#define AREA "odirect"
#include "lib/probe.h"
#include "lib/gup_test.h"
#include <sys/syscall.h>
#include <linux/aio_abi.h>
#include <linux/io_uring.h>
/* <linux/fs.h> (pulled in above) clashes with glibc's <sys/uio.h> (RWF_*) and <sys/mount.h> (BLK*): take
 * struct iovec from <fcntl.h>, declare preadv here, and mount through syscall() */
ssize_t preadv(int fd, const struct iovec *iov, int iovcnt, off_t offset);

#define IO_LEN (64 * 1024)

static int open_ns(int flags)
{
	char ns[128];
	if (p2p_nvme_namespace(ns, sizeof(ns)) < 0)
		probe_fail("the provider %s has no NVMe namespace", p2p_bdf);
	int fd = open(ns, flags | O_DIRECT);
	if (fd < 0)
		probe_fail("open %s", ns);
	return fd;
}

static unsigned char *map_buf(int *pfd, size_t len)
{
	*pfd = p2p_open();
	unsigned char *p = p2p_map(*pfd, len);
	if (p == MAP_FAILED)
		probe_fail("mmap %zu bytes of p2pmem", len);
	return p;
}

CASE(nvme_roundtrip, "O_DIRECT write from p2pmem to the NVMe namespace and read back into p2pmem, data intact, pool restored after munmap")
{
	int pfd, fd = open_ns(O_RDWR);
	long long avail = p2p_available();
	unsigned char *buf = map_buf(&pfd, 2 * IO_LEN);
	unsigned char *out = buf, *in = buf + IO_LEN;
	srand(getpid());
	for (size_t i = 0; i < IO_LEN; i++)
		out[i] = rand();
	memset(in, 0, IO_LEN);
	ssize_t w = pwrite(fd, out, IO_LEN, 1 << 20);
	obs_errno("write", w < 0 ? errno : 0);
	obs_int("written", w);
	ssize_t r = pread(fd, in, IO_LEN, 1 << 20);
	obs_errno("read", r < 0 ? errno : 0);
	obs_int("read_bytes", r);
	obs_bool("data_match", w == IO_LEN && r == IO_LEN && hash_bytes(out, IO_LEN) == hash_bytes(in, IO_LEN));
	munmap(buf, 2 * IO_LEN);
	/* the I/O's pins are gone once the syscalls returned: every page goes back to the pool at munmap */
	obs_int("available_restored_delta", p2p_available() - avail);
	close(pfd);
	close(fd);
}

CASE(ram_to_nvme_to_p2pmem, "data written from RAM by O_DIRECT reads back into p2pmem by O_DIRECT, same hash")
{
	int pfd, fd = open_ns(O_RDWR);
	unsigned char *ram = aligned_alloc(PAGE, IO_LEN);
	unsigned char *in = map_buf(&pfd, IO_LEN);
	for (size_t i = 0; i < IO_LEN; i++)
		ram[i] = (unsigned char)(i * 7 + 3);
	ssize_t w = pwrite(fd, ram, IO_LEN, 2 << 20);
	ssize_t r = pread(fd, in, IO_LEN, 2 << 20);
	obs_errno("read", r < 0 ? errno : 0);
	obs_bool("data_match", w == IO_LEN && r == IO_LEN && hash_bytes(ram, IO_LEN) == hash_bytes(in, IO_LEN));
	munmap(in, IO_LEN);
	close(pfd);
	close(fd);
	free(ram);
}

CASE(virtio_blk_read, "O_DIRECT read from the virtio-blk disk (no P2PDMA support) into p2pmem is refused, the buffer untouched")
{
	int pfd;
	unsigned char *buf = map_buf(&pfd, IO_LEN);
	int fd = open("/dev/vda", O_RDONLY | O_DIRECT);
	if (fd < 0)
		probe_fail("open /dev/vda");
	for (size_t i = 0; i < IO_LEN; i += 8)
		*(volatile uint64_t *)(buf + i) = 0xa5a5a5a5a5a5a5a5ULL ^ i;
	uint64_t h = hash_bytes(buf, IO_LEN);
	ssize_t r = pread(fd, buf, IO_LEN, 0);
	obs_errno("read", r < 0 ? errno : 0);
	/* refused in GUP, before any DMA: the buffer keeps its bytes */
	obs_bool("buffer_unchanged", hash_bytes(buf, IO_LEN) == h);
	munmap(buf, IO_LEN);
	close(pfd);
	close(fd);
}

CASE(null_blk_write, "O_DIRECT write from p2pmem to null_blk (no P2PDMA support) is refused")
{
	int pfd;
	unsigned char *buf = map_buf(&pfd, IO_LEN);
	int fd = open("/dev/nullb0", O_WRONLY | O_DIRECT);
	if (fd < 0)
		probe_skip("no /dev/nullb0 (CONFIG_BLK_DEV_NULL_BLK not built in)");
	ssize_t w = pwrite(fd, buf, IO_LEN, 0);
	obs_errno("write", w < 0 ? errno : 0);
	munmap(buf, IO_LEN);
	close(pfd);
	close(fd);
}

CASE(misaligned, "O_DIRECT with a buffer that is not block aligned gives EINVAL, the buffer untouched")
{
	int pfd, fd = open_ns(O_RDONLY);
	unsigned char *buf = map_buf(&pfd, 2 * IO_LEN);
	for (size_t i = 0; i < 2 * IO_LEN; i += 8)
		*(volatile uint64_t *)(buf + i) = 0x5a5a5a5a5a5a5a5aULL ^ i;
	uint64_t h = hash_bytes(buf, 2 * IO_LEN);
	ssize_t r = pread(fd, buf + 1, IO_LEN, 0);
	obs_errno("read", r < 0 ? errno : 0);
	obs_bool("buffer_unchanged", hash_bytes(buf, 2 * IO_LEN) == h);
	munmap(buf, 2 * IO_LEN);
	close(pfd);
	close(fd);
}

CASE(buffered_write_from_p2pmem, "a buffered write() from a p2pmem buffer works (CPU copy): the file holds the buffer's bytes")
{
	int pfd;
	unsigned char *buf = map_buf(&pfd, PAGE);
	unsigned char ref[PAGE], back[PAGE];
	for (size_t i = 0; i < PAGE; i++)
		ref[i] = (unsigned char)(i * 13 + 5);
	for (size_t i = 0; i < PAGE; i += 8)
		*(volatile uint64_t *)(buf + i) = *(uint64_t *)(ref + i);
	const char *path = "/tmp/rig-buffered";
	int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
	ssize_t w = write(fd, buf, PAGE);
	obs_errno("write", w < 0 ? errno : 0);
	obs_int("written", w);
	close(fd);
	/* read the file back into RAM: what the write took from p2pmem, not just how much */
	fd = open(path, O_RDONLY);
	ssize_t r = fd < 0 ? -1 : read(fd, back, PAGE);
	obs_bool("file_matches_buffer", w == (ssize_t)PAGE && r == (ssize_t)PAGE && !memcmp(back, ref, PAGE));
	if (fd >= 0)
		close(fd);
	unlink(path);
	munmap(buf, PAGE);
	close(pfd);
}

/* ------------------------------------------------------------------ helpers of the cases below */

/* a RAM buffer holding a pattern that differs per `seed` (so a stale buffer never matches by chance) */
static unsigned char *pattern(size_t len, unsigned seed)
{
	unsigned char *ram = aligned_alloc(PAGE, len);
	if (!ram)
		probe_fail("aligned_alloc");
	for (size_t i = 0; i < len; i++)
		ram[i] = (unsigned char)(i * 131 + (i >> 12) * 7 + seed * 29 + 1);
	return ram;
}

/* put a pattern on the namespace at `off` with an O_DIRECT write from RAM; returns the RAM copy */
static unsigned char *preload(int fd, off_t off, size_t len, unsigned seed)
{
	unsigned char *ram = pattern(len, seed);
	if (pwrite(fd, ram, len, off) != (ssize_t)len)
		probe_fail("O_DIRECT write of the reference data from RAM");
	return ram;
}

/* ------------------------------------------------------------------ async I/O interfaces (section 2) */

CASE(libaio_read, "libaio (io_submit) O_DIRECT read from the NVMe namespace into p2pmem, data intact")
{
	int pfd, fd = open_ns(O_RDWR);
	const off_t off = 4 << 20;
	unsigned char *ram = preload(fd, off, IO_LEN, 1);
	unsigned char *buf = map_buf(&pfd, IO_LEN);
	p2p_zero(buf, IO_LEN);
	aio_context_t ctx = 0;
	if (syscall(SYS_io_setup, 1, &ctx) < 0) {
		if (errno == ENOSYS)
			probe_skip("no native AIO in this kernel (CONFIG_AIO off)");
		probe_fail("io_setup");
	}
	struct iocb cb = {.aio_lio_opcode = IOCB_CMD_PREAD, .aio_fildes = fd, .aio_buf = (uintptr_t)buf,
			  .aio_nbytes = IO_LEN, .aio_offset = off};
	struct iocb *cbs[1] = {&cb};
	long n = syscall(SYS_io_submit, ctx, 1, cbs);
	obs_errno("submit", n < 0 ? errno : 0);
	struct io_event ev = {.res = -EBADE};
	struct timespec ts = {20, 0};
	if (n == 1 && syscall(SYS_io_getevents, ctx, 1, 1, &ev, &ts) != 1)
		probe_fail("io_getevents: no completion within 20 s");
	/* res is the byte count or -errno, as a read() would return it */
	obs_errno("read", ev.res < 0 ? (int)-ev.res : 0);
	obs_int("read_bytes", ev.res);
	obs_bool("data_match", ev.res == IO_LEN && hash_bytes(buf, IO_LEN) == hash_bytes(ram, IO_LEN));
	syscall(SYS_io_destroy, ctx);
	munmap(buf, IO_LEN);
	close(pfd);
	close(fd);
	free(ram);
}

/* one IORING_OP_READ through a fresh ring (no liburing in the guest): the CQE's res, or -errno of the setup */
static long uring_read(int fd, void *buf, unsigned len, off_t off)
{
	struct io_uring_params p = {0};
	int rfd = syscall(SYS_io_uring_setup, 2, &p);
	if (rfd < 0) {
		if (errno == ENOSYS)
			probe_skip("no io_uring in this kernel (CONFIG_IO_URING off)");
		probe_fail("io_uring_setup");
	}
	size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	int single = p.features & IORING_FEAT_SINGLE_MMAP;
	if (single)
		sq_len = cq_len = sq_len > cq_len ? sq_len : cq_len;
	char *sq = mmap(NULL, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED, rfd, IORING_OFF_SQ_RING);
	char *cq = single ? sq : mmap(NULL, cq_len, PROT_READ | PROT_WRITE, MAP_SHARED, rfd, IORING_OFF_CQ_RING);
	struct io_uring_sqe *sqes = mmap(NULL, p.sq_entries * sizeof(*sqes), PROT_READ | PROT_WRITE, MAP_SHARED, rfd,
					 IORING_OFF_SQES);
	if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED)
		probe_fail("mmap of the io_uring rings");
	unsigned *sq_tail = (unsigned *)(sq + p.sq_off.tail), *cq_head = (unsigned *)(cq + p.cq_off.head);
	unsigned tail = *sq_tail, idx = tail & *(unsigned *)(sq + p.sq_off.ring_mask);
	struct io_uring_sqe *e = &sqes[idx];
	memset(e, 0, sizeof(*e));
	e->opcode = IORING_OP_READ; /* non-fixed: the buffer is pinned per request, like O_DIRECT read() */
	e->fd = fd;
	e->addr = (uintptr_t)buf;
	e->len = len;
	e->off = off;
	((unsigned *)(sq + p.sq_off.array))[idx] = idx;
	__atomic_store_n(sq_tail, tail + 1, __ATOMIC_RELEASE);
	long res;
	if (syscall(SYS_io_uring_enter, rfd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
		probe_fail("io_uring_enter");
	unsigned head = *cq_head;
	if (head == __atomic_load_n((unsigned *)(cq + p.cq_off.tail), __ATOMIC_ACQUIRE))
		probe_fail("io_uring_enter returned without a completion");
	res = ((struct io_uring_cqe *)(cq + p.cq_off.cqes))[head & *(unsigned *)(cq + p.cq_off.ring_mask)].res;
	__atomic_store_n(cq_head, head + 1, __ATOMIC_RELEASE);
	munmap(sqes, p.sq_entries * sizeof(*sqes));
	if (!single)
		munmap(cq, cq_len);
	munmap(sq, sq_len);
	close(rfd);
	return res;
}

CASE(io_uring_read, "io_uring IORING_OP_READ (non-fixed buffer) O_DIRECT from the NVMe namespace into p2pmem, data intact")
{
	int pfd, fd = open_ns(O_RDWR);
	const off_t off = 5 << 20;
	unsigned char *ram = preload(fd, off, IO_LEN, 2);
	unsigned char *buf = map_buf(&pfd, IO_LEN);
	p2p_zero(buf, IO_LEN);
	long res = uring_read(fd, buf, IO_LEN, off);
	obs_errno("read", res < 0 ? (int)-res : 0);
	obs_int("read_bytes", res);
	obs_bool("data_match", res == IO_LEN && hash_bytes(buf, IO_LEN) == hash_bytes(ram, IO_LEN));
	munmap(buf, IO_LEN);
	close(pfd);
	close(fd);
	free(ram);
}

/* ------------------------------------------------------------------ mixed and CPU-copy buffers */

CASE(preadv_ram_then_p2pmem, "O_DIRECT preadv [RAM page, p2pmem page] on the provider's own namespace: one command mixing host memory and the CMB")
{
	int pfd, fd = open_ns(O_RDWR);
	const off_t off = 6 << 20;
	unsigned char *ram = preload(fd, off, 2 * PAGE, 3);
	unsigned char *p2p = map_buf(&pfd, PAGE);
	unsigned char *first = aligned_alloc(PAGE, PAGE);
	memset(first, 0, PAGE);
	p2p_zero(p2p, PAGE);
	struct iovec iov[2] = {{first, PAGE}, {p2p, PAGE}};
	ssize_t n = preadv(fd, iov, 2, off);
	obs_errno("read", n < 0 ? errno : 0);
	obs_int("read_bytes", n);
	obs_bool("data_match", n == 2 * (ssize_t)PAGE && hash_bytes(first, PAGE) == hash_bytes(ram, PAGE) &&
				       hash_bytes(p2p, PAGE) == hash_bytes(ram + PAGE, PAGE));
	/* CMBLOC.CDPMLS (bit 5): the controller says one command's data may mix CMB and host memory */
	char pat[512];
	glob_t g;
	snprintf(pat, sizeof(pat), "%s/nvme/nvme*/cmbloc", p2p_dev);
	if (glob(pat, 0, NULL, &g) == 0 && g.gl_pathc > 0)
		obs_int("cmbloc_cdpmls", (read_ll(g.gl_pathv[0]) >> 5) & 1);
	globfree(&g);
	munmap(p2p, PAGE);
	close(pfd);
	close(fd);
	free(first);
	free(ram);
}

CASE(preadv_ram_then_p2pmem_no_p2p_queue, "O_DIRECT preadv [RAM page, p2pmem page] on the virtio-blk disk (no P2PDMA): the direct part reads the RAM page, GUP refuses the p2pmem page, and the block device finishes the rest through the page cache (a CPU copy): all bytes, data intact")
{
	int fd = open("/dev/vda", O_RDONLY | O_DIRECT);
	if (fd < 0)
		probe_fail("open /dev/vda");
	/* the disk's last 8 KiB: blocks of the root file system nothing writes while the case runs */
	off_t off = read_ll("/sys/block/vda/size") * 512 - 2 * (off_t)PAGE;
	unsigned char *ref = aligned_alloc(PAGE, 2 * PAGE), *first = aligned_alloc(PAGE, PAGE);
	if (off <= 0 || pread(fd, ref, 2 * PAGE, off) != 2 * (ssize_t)PAGE)
		probe_fail("read the end of /dev/vda into RAM");
	int pfd;
	unsigned char *p2p = map_buf(&pfd, PAGE);
	memset(first, 0xa5, PAGE); /* both buffers hold what the disk does not: only a real read changes them */
	for (size_t i = 0; i < PAGE; i += 8)
		*(volatile uint64_t *)(p2p + i) = 0xa5a5a5a5a5a5a5a5ULL;
	struct iovec iov[2] = {{first, PAGE}, {p2p, PAGE}};
	ssize_t n = preadv(fd, iov, 2, off);
	obs_errno("read", n < 0 ? errno : 0);
	obs_int("read_bytes", n);
	obs_bool("data_match", n == 2 * (ssize_t)PAGE && hash_bytes(first, PAGE) == hash_bytes(ref, PAGE) &&
				       hash_bytes(p2p, PAGE) == hash_bytes(ref + PAGE, PAGE));
	munmap(p2p, PAGE);
	close(pfd);
	close(fd);
	free(first);
	free(ref);
}

CASE(buffered_read_into_p2pmem, "a buffered read() of a regular file into a p2pmem buffer works (CPU copy)")
{
	const char *path = "/tmp/rig-buffered-read";
	unsigned char *ram = pattern(IO_LEN, 4);
	int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
	if (fd < 0 || write(fd, ram, IO_LEN) != IO_LEN)
		probe_fail("write %s", path);
	close(fd);
	int pfd;
	unsigned char *buf = map_buf(&pfd, IO_LEN);
	p2p_zero(buf, IO_LEN);
	fd = open(path, O_RDONLY);
	ssize_t r = read(fd, buf, IO_LEN);
	obs_errno("read", r < 0 ? errno : 0);
	obs_int("read_bytes", r);
	obs_bool("data_match", r == IO_LEN && hash_bytes(buf, IO_LEN) == hash_bytes(ram, IO_LEN));
	close(fd);
	unlink(path);
	munmap(buf, IO_LEN);
	close(pfd);
	free(ram);
}

/* ------------------------------------------------------------------ files on ext4 / xfs on the namespace (section 2, 4) */

#define FS_LEN (256 * 1024)

static int mount_fs(const char *dev, const char *dir, const char *fstype)
{
	return (int)syscall(SYS_mount, dev, dir, fstype, 0UL, NULL);
}

static int umount_fs(const char *dir) { return (int)syscall(SYS_umount2, dir, 0); }

/* pages of the first `len` bytes of fd's file that sit in the page cache (0 after a real direct I/O) */
static long cached_pages(int fd, size_t len)
{
	unsigned char vec[FS_LEN / PAGE];
	void *m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return -1;
	long n = mincore(m, len, vec) ? -1 : 0;
	for (size_t i = 0; n >= 0 && i < len / PAGE; i++)
		n += vec[i] & 1;
	munmap(m, len);
	return n;
}

/* mkfs the provider's own namespace, mount it under /tmp, O_DIRECT write a file from p2pmem and read it back
 * into p2pmem; then remount and read the file through the page cache to check what reached the disk */
static void fs_roundtrip(const char *fstype, const char *mkfs)
{
	char ns[128], cmd[512], mnt[64], file[96], log[256] = "";
	if (p2p_nvme_namespace(ns, sizeof(ns)) < 0)
		probe_fail("the provider %s has no NVMe namespace", p2p_bdf);
	snprintf(mnt, sizeof(mnt), "/tmp/rig-%s", fstype);
	snprintf(file, sizeof(file), "%s/data", mnt);
	mkdir(mnt, 0700);
	snprintf(cmd, sizeof(cmd), "%s %s >/tmp/rig-mkfs.log 2>&1", mkfs, ns);
	int st = system(cmd);
	read_file("/tmp/rig-mkfs.log", log, sizeof(log));
	unlink("/tmp/rig-mkfs.log");
	if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
		probe_skip("no mkfs for %s in the guest", fstype);
	if (st != 0) {
		log[strcspn(log, "\n")] = 0;
		probe_fail("%s failed: %s", cmd, log);
	}
	if (mount_fs(ns, mnt, fstype) < 0)
		probe_fail("mount %s on %s as %s", ns, mnt, fstype);

	unsigned char *ram = pattern(FS_LEN, fstype[0]);
	int pfd;
	unsigned char *buf = map_buf(&pfd, 2 * FS_LEN), *out = buf, *in = buf + FS_LEN;
	p2p_copy(out, ram, FS_LEN);
	p2p_zero(in, FS_LEN);
	int fd = open(file, O_CREAT | O_TRUNC | O_RDWR | O_DIRECT, 0600);
	if (fd < 0)
		probe_fail("open %s O_DIRECT", file);
	ssize_t w = pwrite(fd, out, FS_LEN, 0);
	obs_errno("write", w < 0 ? errno : 0);
	obs_int("written", w);
	fsync(fd);
	ssize_t r = pread(fd, in, FS_LEN, 0);
	obs_errno("read", r < 0 ? errno : 0);
	obs_int("read_bytes", r);
	obs_bool("data_match", w == FS_LEN && r == FS_LEN && hash_bytes(in, FS_LEN) == hash_bytes(ram, FS_LEN));
	/* a write that silently fell back to buffered I/O would leave the pages in the page cache */
	obs_int("page_cache_pages", cached_pages(fd, FS_LEN));
	close(fd);

	unsigned char *back = aligned_alloc(PAGE, FS_LEN);
	memset(back, 0, FS_LEN);
	if (umount_fs(mnt) < 0 || mount_fs(ns, mnt, fstype) < 0)
		probe_fail("remount %s", mnt);
	fd = open(file, O_RDONLY);
	obs_bool("data_after_remount", fd >= 0 && read(fd, back, FS_LEN) == FS_LEN && !memcmp(back, ram, FS_LEN));
	if (fd >= 0)
		close(fd);
	int rc = umount_fs(mnt);
	obs_errno("umount", rc < 0 ? errno : 0);
	rmdir(mnt);
	munmap(buf, 2 * FS_LEN);
	close(pfd);
	free(back);
	free(ram);
}

CASE(ext4_file, "O_DIRECT write and read of a file on ext4 on the NVMe namespace with p2pmem buffers, data on disk intact")
{
	fs_roundtrip("ext4", "mkfs.ext4 -q -F -b 4096");
}

CASE(xfs_file, "O_DIRECT write and read of a file on xfs on the NVMe namespace with p2pmem buffers, data on disk intact")
{
	/* the namespace (256 MiB) is under mkfs.xfs's 300 MB floor; these three variables are xfsprogs' documented
	 * fstests escape hatch for small test filesystems */
	fs_roundtrip("xfs", "TEST_DIR=1 TEST_DEV=1 QA_CHECK_FS=1 mkfs.xfs -q -f");
}

/* ------------------------------------------------------------------ page state after O_DIRECT (section 1.3, 4) */

CASE(dio_refcount_restored, "after O_DIRECT write from and read into p2pmem, every page's refcount is back to its value before the I/O and munmap returns every page to the pool")
{
	int gfd = gup_fd(), pfd, fd = open_ns(O_RDWR);
	const off_t off = 7 << 20;
	long long avail = p2p_available();
	const int n = GUP_TEST_MAX_PAGES_TO_DUMP;
	unsigned char *ram = pattern(n * PAGE, 5);
	unsigned char *buf = map_buf(&pfd, 2 * n * PAGE), *out = buf, *in = buf + n * PAGE;
	p2p_copy(out, ram, n * PAGE);
	p2p_zero(in, n * PAGE);
	struct page_state before[2][GUP_TEST_MAX_PAGES_TO_DUMP], after[2][GUP_TEST_MAX_PAGES_TO_DUMP];
	if (dump_user_pages(gfd, out, n, before[0]) != n || dump_user_pages(gfd, in, n, before[1]) != n)
		probe_fail("DUMP_USER_PAGES_TEST before the I/O");
	ssize_t w = pwrite(fd, out, n * PAGE, off);
	ssize_t r = pread(fd, in, n * PAGE, off);
	obs_errno("write", w < 0 ? errno : 0);
	obs_errno("read", r < 0 ? errno : 0);
	obs_bool("data_match", w == n * (ssize_t)PAGE && r == n * (ssize_t)PAGE &&
				       hash_bytes(in, n * PAGE) == hash_bytes(ram, n * PAGE));
	if (dump_user_pages(gfd, out, n, after[0]) != n || dump_user_pages(gfd, in, n, after[1]) != n)
		probe_fail("DUMP_USER_PAGES_TEST after the I/O");
	int restored = 1;
	for (int b = 0; b < 2; b++)
		for (int i = 0; i < n; i++)
			restored &= after[b][i].refcount == before[b][i].refcount &&
				    after[b][i].mapcount == before[b][i].mapcount;
	obs_int("refcount_before", before[0][0].refcount);
	obs_int("source_refcount_after", after[0][0].refcount);
	obs_int("dest_refcount_after", after[1][0].refcount);
	obs_bool("refcount_restored", restored);
	munmap(buf, 2 * n * PAGE);
	obs_int("available_restored_delta", p2p_available() - avail);
	close(pfd);
	close(fd);
	close(gfd);
	free(ram);
}
