/* How the DMA mapping layer treats P2P pages on machines with a guest IOMMU (intel-iommu; Linux turns ACS
 * redirect on for it), with the IOMMU in pass-through (iommu=pt), and with bounce buffers (swiotlb=force)
 * (docs/behaviour.md sections 6.1 and 6.2). Each case runs on the topology expectations.yaml names; controller
 * i of that topology has serial p2pdmarig<i> (nvme_ctrl_namespace). */
#define AREA "dma"
#include "lib/probe.h"
#include <sys/ioctl.h>
#include <sys/select.h>
#include <linux/nvme_ioctl.h>

#define IO_LEN (64 * 1024)

/* /dev/nvmeXn1 of controller `index`, the DMA client of the case */
static void client_namespace(int index, char *out, size_t len)
{
	if (nvme_ctrl_namespace(index, out, len) < 0)
		probe_skip("no namespace of NVMe controller %d (this case needs its topology)", index);
}

/* what the kernel made of the client's IOMMU: its group's default domain ("DMA", "DMA-FQ": translated;
 * "identity": pass-through; "none": no IOMMU group at all) */
static void obs_iommu_domain(int index)
{
	char bdf[32], path[512], type[64] = "none";
	if (nvme_ctrl_bdf(index, bdf, sizeof(bdf)) == 0) {
		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/iommu_group/type", bdf);
		if (read_file(path, type, sizeof(type)) > 0)
			type[strcspn(type, "\n")] = 0;
	}
	obs_str("client_iommu_domain", type);
}

/* O_DIRECT between p2pmem of controller `provider` and the namespace of controller `client` */
static void p2p_to_client(int provider, int client)
{
	char ns[128];
	p2p_use_ctrl(provider);
	client_namespace(client, ns, sizeof(ns));
	obs_iommu_domain(client);
	dio_roundtrip(ns, IO_LEN);
}

CASE(iommu_rootbus_amd_dio, "IOMMU on, AMD family 0x17 model, a peer on another root port: P2P through the host bridge, mapped by the IOMMU (translated domain), data intact")
{
	p2p_to_client(0, 2);
}

CASE(iommu_acs_amd_dio, "IOMMU on, AMD model, a peer that is the provider's second function behind one root port with ACS redirect: through the host bridge, data intact, the ACS warnings")
{
	p2p_to_client(0, 1);
}

CASE(iommu_own_namespace_dio, "IOMMU on: O_DIRECT between p2pmem and the provider's own namespace (distance 0, a bus address the IOMMU does not map), data intact")
{
	p2p_to_client(0, 0);
}

CASE(iommu_rootbus_intel_refused, "IOMMU on, Intel model, a peer on another root port: P2P refused with EREMOTEIO (no common bridge, host bridge not whitelisted)")
{
	p2p_to_client(0, 2);
}

CASE(iommu_acs_intel_refused, "IOMMU on, Intel model, the provider's second function behind a root port with ACS redirect: refused with EREMOTEIO, the ACS and whitelist warnings")
{
	p2p_to_client(0, 1);
}

CASE(iommu_switch_dio, "IOMMU on and translating, a provider and a peer under one PCIe switch (no ACS): a bus address, which Linux leaves out of the IOMMU; data intact")
{
	p2p_to_client(3, 4);
}

CASE(iommu_pt_switch_dio, "IOMMU in pass-through (iommu=pt), a peer under the same switch: bus address, identity domain, data intact")
{
	p2p_to_client(0, 1);
}

CASE(iommu_pt_rootbus_dio, "IOMMU in pass-through, AMD model, a peer on another root port: through the host bridge, identity domain, data intact")
{
	p2p_to_client(0, 2);
}

/* swiotlb's own count of the bounce slots ever in use at once (debugfs): proof that the kernel bounced */
static long long swiotlb_hiwater(void)
{
	return read_ll("/sys/kernel/debug/swiotlb/io_tlb_used_hiwater");
}

static void swiotlb_reset_hiwater(void)
{
	if (write_file("/sys/kernel/debug/swiotlb/io_tlb_used_hiwater", "0") < 0)
		probe_fail("reset /sys/kernel/debug/swiotlb/io_tlb_used_hiwater");
}

/* one O_DIRECT transfer between `buf` and `fd` in a child, as the errno name it ended with, or "hang" when it did
 * not end within `seconds` (the child is then left behind, blocked in the kernel with the mapping: the rig sees
 * the pool short and retires the VM). The child's stdout is not the probe's, so that the probe's answer is not
 * held back by it. */
static const char *dio_within(int fd, void *buf, size_t len, int is_write, double seconds)
{
	static char name[32];
	int res[2];
	if (pipe(res))
		probe_fail("pipe");
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);
		dup2(null, 1);
		dup2(null, 2);
		ssize_t n = is_write ? pwrite(fd, buf, len, 0) : pread(fd, buf, len, 0);
		int err = n < 0 ? errno : 0;
		_exit(write(res[1], &err, sizeof(err)) == sizeof(err) ? 0 : 1);
	}
	close(res[1]);
	struct timeval tv = {.tv_sec = (long)seconds, .tv_usec = (long)((seconds - (long)seconds) * 1e6)};
	fd_set rd;
	FD_ZERO(&rd);
	FD_SET(res[0], &rd);
	int err = -1;
	if (select(res[0] + 1, &rd, NULL, NULL, &tv) == 1 && read(res[0], &err, sizeof(err)) == sizeof(err)) {
		waitpid(pid, NULL, 0);
		snprintf(name, sizeof(name), "%s", errname(err));
	} else {
		snprintf(name, sizeof(name), "hang");
	}
	close(res[0]);
	return name;
}

CASE(swiotlb_rootbus_refused, "swiotlb=force, AMD model, root-complex peer: a P2P page the kernel would have to bounce (device memory cannot be) fails the I/O with an error, at once")
{
	char ns[128];
	p2p_use_ctrl(0);
	client_namespace(1, ns, sizeof(ns));
	obs_iommu_domain(1);
	swiotlb_reset_hiwater();
	int fd = open(ns, O_RDWR | O_DIRECT), pfd = p2p_open();
	if (fd < 0)
		probe_fail("open %s", ns);
	void *buf = p2p_map(pfd, IO_LEN);
	if (buf == MAP_FAILED)
		probe_fail("mmap");
	/* 8 KiB takes milliseconds, bounced or not, even under TCG on a loaded host: 2 s without an answer is no answer */
	const char *w = dio_within(fd, buf, IO_LEN, 1, 2.0);
	obs_str("write", w);
	/* a write that never ends leaves its request in the queue: a read behind it would only wait too */
	obs_str("read", strcmp(w, "hang") ? dio_within(fd, buf, IO_LEN, 0, 2.0) : "not tried");
	obs_int("bounced_slots", swiotlb_hiwater());
}

CASE(swiotlb_own_namespace_dio, "swiotlb=force: O_DIRECT between p2pmem and the provider's own namespace is a bus address, never bounced; data intact")
{
	swiotlb_reset_hiwater();
	p2p_to_client(0, 0);
	obs_int("bounced_slots", swiotlb_hiwater());
}

CASE(swiotlb_own_namespace_one_page, "swiotlb=force: a one-page O_DIRECT between p2pmem and the provider's own namespace (the driver's single-segment path) is not bounced either; data intact")
{
	char ns[128];
	p2p_use_ctrl(0);
	client_namespace(0, ns, sizeof(ns));
	swiotlb_reset_hiwater();
	dio_roundtrip(ns, PAGE);
	obs_int("bounced_slots", swiotlb_hiwater());
}

CASE(swiotlb_ram_dio, "swiotlb=force: O_DIRECT between RAM and the NVMe namespace goes through bounce buffers (PRPs), data intact")
{
	char ns[128];
	client_namespace(0, ns, sizeof(ns));
	int fd = open(ns, O_RDWR | O_DIRECT);
	if (fd < 0)
		probe_fail("open %s", ns);
	unsigned char *out = aligned_alloc(PAGE, IO_LEN), *in = aligned_alloc(PAGE, IO_LEN);
	for (size_t i = 0; i < IO_LEN; i++)
		out[i] = (unsigned char)(i * 7 + 5);
	memset(in, 0, IO_LEN);
	swiotlb_reset_hiwater();
	ssize_t w = pwrite(fd, out, IO_LEN, 1 << 20);
	obs_errno("write", w < 0 ? errno : 0);
	ssize_t r = pread(fd, in, IO_LEN, 1 << 20);
	obs_errno("read", r < 0 ? errno : 0);
	obs_bool("data_match", w == IO_LEN && r == IO_LEN && !memcmp(out, in, IO_LEN));
	obs_bool("bounced", swiotlb_hiwater() > 0);
	close(fd);
	free(out);
	free(in);
}

CASE(swiotlb_ram_passthru, "swiotlb=force: NVMe passthrough write and read of a RAM buffer (SGLs for user commands) are bounced, data intact")
{
	char ns[128];
	client_namespace(0, ns, sizeof(ns));
	int fd = open(ns, O_RDWR);
	if (fd < 0)
		probe_fail("open %s", ns);
	int nsid = ioctl(fd, NVME_IOCTL_ID);
	char path[256];
	snprintf(path, sizeof(path), "/sys/block/%s/queue/logical_block_size", ns + 5);
	long long lba = read_ll(path);
	if (nsid <= 0 || lba <= 0)
		probe_fail("NVME_IOCTL_ID / logical_block_size of %s", ns);
	unsigned char *out = aligned_alloc(PAGE, IO_LEN), *in = aligned_alloc(PAGE, IO_LEN);
	for (size_t i = 0; i < IO_LEN; i++)
		out[i] = (unsigned char)(i * 11 + 3);
	memset(in, 0, IO_LEN);
	const off_t off = 2 << 20;
	swiotlb_reset_hiwater();
	struct nvme_passthru_cmd c = {.opcode = 0x01, .nsid = nsid, .addr = (uintptr_t)out, .data_len = IO_LEN,
				      .cdw10 = off / lba, .cdw12 = IO_LEN / lba - 1};
	int rc = ioctl(fd, NVME_IOCTL_IO_CMD, &c);
	obs_errno("write", rc < 0 ? errno : 0);
	obs_int("write_status", rc > 0 ? rc : 0);
	c.opcode = 0x02;
	c.addr = (uintptr_t)in;
	rc = ioctl(fd, NVME_IOCTL_IO_CMD, &c);
	obs_errno("read", rc < 0 ? errno : 0);
	obs_int("read_status", rc > 0 ? rc : 0);
	obs_bool("data_match", !memcmp(out, in, IO_LEN));
	obs_bool("bounced", swiotlb_hiwater() > 0);
	close(fd);
	free(out);
	free(in);
}
