/* Removal of the provider through the hypervisor (QMP device_del) while userspace maps p2pmem
 * (docs/behaviour.md sections 1.4 and 8.1). The host acts once the probe logs its ready marker. */
#define AREA "hotplug"
#include "lib/probe.h"

static void ready(void)
{
	/* one write() per record: /dev/kmsg refuses glibc dprintf's stream writes with EINVAL */
	char line[256];
	int n = snprintf(line, sizeof(line), "p2pdma-rig: ready %s.%s\n", probe_area, getenv("PROBE_CASE"));
	int fd = open("/dev/kmsg", O_WRONLY);
	if (fd < 0 || write(fd, line, n) != n)
		probe_fail("cannot log the ready marker to /dev/kmsg");
	close(fd);
}

CASE(device_del_while_mapped, "QMP device_del of the provider while a parent and a child map p2pmem: both get SIGBUS")
{
	int fd = p2p_open();
	volatile char *p = p2p_map(fd, 4 * PAGE);
	if (p == MAP_FAILED)
		probe_fail("mmap");
	p[0] = 1;
	int go[2], res[2];
	if (pipe(go) || pipe(res))
		probe_fail("pipe");
	pid_t pid = fork();
	if (pid == 0) {
		char c;
		if (read(go[0], &c, 1) != 1)
			_exit(1);
		int r[2] = {touch(p, 0, 0), fault_code};
		if (write(res[1], r, sizeof(r)) != sizeof(r))
			_exit(1);
		_exit(0);
	}
	char dir[512];
	snprintf(dir, sizeof(dir), "%s/p2pmem", p2p_dev);
	double t0 = now_s();
	ready();
	/* the host removes the device; the hotplug driver unbinds nvme, which tears down the pool */
	int gone = wait_path(p2p_dev, 0, 45000) == 0;
	obs_bool("device_removed", gone);
	obs_bool("removed_within_30s", gone && now_s() - t0 < 30);
	int sig = touch(p, 0, 0);
	obs_str("parent_read", signame(sig));
	obs_int("parent_si_code", sig ? fault_code : 0);
	if (write(go[1], "x", 1) != 1)
		probe_fail("pipe");
	int r[2] = {-1, 0}, st;
	if (read(res[0], r, sizeof(r)) != sizeof(r))
		r[0] = -1;
	waitpid(pid, &st, 0);
	obs_str("child_read", r[0] < 0 ? "child died" : signame(r[0]));
	munmap((void *)p, 4 * PAGE);
	close(fd);
}
