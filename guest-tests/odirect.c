/* O_DIRECT I/O with a p2pmem buffer (p2pdma-behaviour.md sections 2 and 4). */
#define AREA "odirect"
#include "lib/probe.h"

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

CASE(nvme_roundtrip, "O_DIRECT write from p2pmem to the NVMe namespace and read back into p2pmem, data intact")
{
	int pfd, fd = open_ns(O_RDWR);
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

CASE(virtio_blk_read, "O_DIRECT read from the virtio-blk disk (no P2PDMA support) into p2pmem is refused")
{
	int pfd;
	unsigned char *buf = map_buf(&pfd, IO_LEN);
	int fd = open("/dev/vda", O_RDONLY | O_DIRECT);
	if (fd < 0)
		probe_fail("open /dev/vda");
	ssize_t r = pread(fd, buf, IO_LEN, 0);
	obs_errno("read", r < 0 ? errno : 0);
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

CASE(misaligned, "O_DIRECT with a buffer that is not block aligned gives EINVAL")
{
	int pfd, fd = open_ns(O_RDONLY);
	unsigned char *buf = map_buf(&pfd, 2 * IO_LEN);
	ssize_t r = pread(fd, buf + 1, IO_LEN, 0);
	obs_errno("read", r < 0 ? errno : 0);
	munmap(buf, 2 * IO_LEN);
	close(pfd);
	close(fd);
}

CASE(buffered_write_from_p2pmem, "a buffered write() from a p2pmem buffer works (CPU copy)")
{
	int pfd;
	unsigned char *buf = map_buf(&pfd, PAGE);
	memset(buf, 'x', PAGE);
	int fd = open("/tmp/rig-buffered", O_CREAT | O_TRUNC | O_WRONLY, 0600);
	ssize_t w = write(fd, buf, PAGE);
	obs_errno("write", w < 0 ? errno : 0);
	obs_int("written", w);
	close(fd);
	unlink("/tmp/rig-buffered");
	munmap(buf, PAGE);
	close(pfd);
}
