/* Block drivers stacked on NVMe between a program and P2PDMA: the NVMe multipath head disk and md raid0
 * (docs/behaviour.md section 4.2). A stacking driver passes P2P memory down only if its queue says it can
 * (BLK_FEAT_PCI_P2PDMA); otherwise GUP refuses the pages at once. */
#define AREA "stack"
#include "lib/probe.h"
#include <sys/ioctl.h>
#include <linux/nvme_ioctl.h>

#define IO_LEN (128 * 1024) /* two 64 KiB raid0 chunks: one request to each member */

/* the provider of the multipath cases: controller 5 of the features topology, one of the subsystem's two */
#define MULTIPATH_CTRL 5

/* the multipath head of the machine's shared namespace: the only /dev/nvmeXnY whose sysfs device is the
 * subsystem, not a controller (a subsystem of one controller gets no head); the case's provider is a
 * controller of that subsystem */
static void multipath_head(char *out, size_t len)
{
	p2p_use_ctrl(MULTIPATH_CTRL);
	glob_t g;
	if (glob("/sys/class/nvme-subsystem/nvme-subsys*/nvme*n1", 0, NULL, &g) != 0 || g.gl_pathc == 0)
		probe_skip("no multipath head (this case needs the multipath topology and CONFIG_NVME_MULTIPATH)");
	snprintf(out, len, "/dev/%s", strrchr(g.gl_pathv[0], '/') + 1);
	globfree(&g);
}

/* how many controllers (paths) the head's subsystem has: its nvmeN entries beside the head's nvmeXnY */
static int multipath_paths(const char *head)
{
	char pattern[256];
	glob_t g;
	snprintf(pattern, sizeof(pattern), "/sys/class/nvme-subsystem/nvme-subsys*/%s", head + 5);
	if (glob(pattern, 0, NULL, &g) != 0 || g.gl_pathc == 0)
		return 0;
	snprintf(pattern, sizeof(pattern), "%.*s/nvme[0-9]*", (int)(strrchr(g.gl_pathv[0], '/') - g.gl_pathv[0]),
		 g.gl_pathv[0]);
	globfree(&g);
	if (glob(pattern, 0, NULL, &g) != 0)
		return 0;
	int n = 0;
	for (size_t i = 0; i < g.gl_pathc; i++)
		n += strchr(strrchr(g.gl_pathv[i], '/') + 5, 'n') == NULL; /* nvme1, not nvme0n1 */
	globfree(&g);
	return n;
}

CASE(multipath_dio, "O_DIRECT between p2pmem and the NVMe multipath head disk of a namespace shared by two controllers")
{
	char head[128];
	multipath_head(head, sizeof(head));
	obs_int("paths", multipath_paths(head));
	dio_roundtrip(head, IO_LEN);
}

/* One page: the command's data pointer is then the CMB address itself on every kernel. With more, 7.x builds an
 * SGL segment list in host memory (qemu-cmb-sgl-segment-read), which QEMU refuses only on the controller that
 * owns the CMB, and which of the two paths the head takes is its own choice: the case would judge the path, not
 * the head. The nvme.* cases show QEMU's bug on one controller. */
#define PASSTHRU_LEN 4096

CASE(multipath_passthru, "NVME_IOCTL_IO_CMD on the multipath head: write one page from p2pmem and read it back into p2pmem, data intact")
{
	char head[128], path[256];
	multipath_head(head, sizeof(head));
	int fd = open(head, O_RDWR);
	if (fd < 0)
		probe_fail("open %s", head);
	int nsid = ioctl(fd, NVME_IOCTL_ID);
	snprintf(path, sizeof(path), "/sys/block/%s/queue/logical_block_size", head + 5);
	long long lba = read_ll(path);
	if (nsid <= 0 || lba <= 0)
		probe_fail("NVME_IOCTL_ID / logical_block_size of %s", head);
	int pfd = p2p_open();
	unsigned char *buf = p2p_map(pfd, 2 * PASSTHRU_LEN);
	if (buf == MAP_FAILED)
		probe_fail("mmap");
	unsigned char *ref = malloc(PASSTHRU_LEN);
	for (size_t i = 0; i < PASSTHRU_LEN; i++)
		ref[i] = (unsigned char)(i * 5 + 7);
	p2p_copy(buf, ref, PASSTHRU_LEN);
	p2p_zero(buf + PASSTHRU_LEN, PASSTHRU_LEN);
	struct nvme_passthru_cmd c = {.opcode = 0x01, .nsid = nsid, .addr = (uintptr_t)buf, .data_len = PASSTHRU_LEN,
				      .cdw10 = (4 << 20) / lba, .cdw12 = PASSTHRU_LEN / lba - 1};
	int rc = ioctl(fd, NVME_IOCTL_IO_CMD, &c);
	obs_errno("write", rc < 0 ? errno : 0);
	obs_int("write_status", rc > 0 ? rc : 0);
	c.opcode = 0x02;
	c.addr = (uintptr_t)(buf + PASSTHRU_LEN);
	rc = ioctl(fd, NVME_IOCTL_IO_CMD, &c);
	obs_errno("read", rc < 0 ? errno : 0);
	obs_int("read_status", rc > 0 ? rc : 0);
	obs_bool("data_match", hash_bytes(buf + PASSTHRU_LEN, PASSTHRU_LEN) == hash_bytes(ref, PASSTHRU_LEN));
	munmap(buf, 2 * PASSTHRU_LEN);
	close(pfd);
	close(fd);
	free(ref);
}

/* mdadm (Debian's, in the image) builds a legacy raid0 without superblocks over two namespaces: nothing is
 * written to them but the data, and `mdadm --stop` takes it apart again. mdadm makes md100 through md_mod's
 * new_array (a /dev/md/NAME would make it open a device node that does not exist yet: the deprecated block
 * device autoloading), and the array goes away when it is stopped. */
#define MD_NAME "md100"
static int mdadm(const char *args)
{
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "mdadm %s >/dev/null 2>&1", args);
	int st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

CASE(md_raid0_dio, "O_DIRECT between p2pmem and an md raid0 over the provider's namespace and a peer's under the same switch (128 KiB: both members)")
{
	char a[128], b[128], args[512];
	if (nvme_ctrl_namespace(0, a, sizeof(a)) < 0 || nvme_ctrl_namespace(1, b, sizeof(b)) < 0)
		probe_skip("this case needs two NVMe namespaces (topology switch)");
	snprintf(args, sizeof(args), "--build /dev/" MD_NAME " --run --level=0 --chunk=64 --raid-devices=2 %s %s", a, b);
	int rc = mdadm(args);
	obs_int("mdadm_build", rc);
	if (rc != 0)
		probe_fail("mdadm %s exited %d", args, rc);
	dio_roundtrip("/dev/" MD_NAME, IO_LEN);
	obs_int("mdadm_stop", mdadm("--stop /dev/" MD_NAME));
	obs_bool("md_gone_after_stop", wait_path("/dev/" MD_NAME, 0, 2000) == 0);
}
