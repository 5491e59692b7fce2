/* Unbinding the provider's driver while userspace maps p2pmem (docs/behaviour.md sections 1.4 and 8.1).
 * Every case leaves the device bound again: later cases depend on it. */
#define AREA "unbind"
#include "lib/probe.h"

static void rebind_and_report(long long avail_before)
{
	int rc = p2p_bind();
	obs_errno("rebind", rc < 0 ? errno : 0);
	obs_int("rebind_available_delta", rc < 0 ? -1 : p2p_available() - avail_before);
}

CASE(while_mapped, "unbind while a parent and a forked child map p2pmem: unbind returns, both get SIGBUS")
{
	int fd = p2p_open();
	long long avail = p2p_available();
	volatile char *p = p2p_map(fd, 4 * PAGE);
	if (p == MAP_FAILED)
		probe_fail("mmap");
	p[0] = 1;
	int pipefd[2], resfd[2];
	if (pipe(pipefd) || pipe(resfd))
		probe_fail("pipe");
	pid_t pid = fork();
	if (pid == 0) {
		char c;
		p[PAGE] = 2; /* child touches its copy of the mapping */
		if (read(pipefd[0], &c, 1) != 1)
			_exit(1);
		int sig = touch(p, 0, 0);
		int res[2] = {sig, fault_code};
		if (write(resfd[1], res, sizeof(res)) != sizeof(res))
			_exit(1);
		_exit(0);
	}
	usleep(100000);
	double t0 = now_s();
	int rc = p2p_unbind();
	double took = now_s() - t0;
	obs_errno("unbind", rc < 0 ? errno : 0);
	obs_bool("unbind_returned_within_10s", took < 10.0);
	int sig = touch(p, 0, 0);
	obs_str("parent_read", signame(sig));
	obs_int("parent_si_code", sig ? fault_code : 0);
	sig = touch(p + PAGE, 1, 3);
	obs_str("parent_write", signame(sig));
	if (write(pipefd[1], "x", 1) != 1)
		probe_fail("pipe write");
	int res[2] = {-1, -1}, st;
	if (read(resfd[0], res, sizeof(res)) != sizeof(res))
		res[0] = -1;
	waitpid(pid, &st, 0);
	obs_str("child_read", res[0] < 0 ? "child died" : signame(res[0]));
	obs_int("child_si_code", res[0] > 0 ? res[1] : 0);
	char path[512];
	snprintf(path, sizeof(path), "%s/p2pmem", p2p_dev);
	obs_bool("p2pmem_dir_gone", access(path, F_OK) != 0);
	munmap((void *)p, 4 * PAGE);
	close(fd);
	rebind_and_report(avail);
}

CASE(old_fd_mmap, "mmap on an allocate fd opened before unbind fails with ENODEV")
{
	int fd = p2p_open();
	long long avail = p2p_available();
	int rc = p2p_unbind();
	obs_errno("unbind", rc < 0 ? errno : 0);
	void *p = p2p_map(fd, PAGE);
	obs_errno("mmap", p == MAP_FAILED ? errno : 0);
	if (p != MAP_FAILED)
		munmap(p, PAGE);
	close(fd);
	rebind_and_report(avail);
}

CASE(open_after_unbind, "opening allocate (v3: /dev/nvmeN) after unbind fails with ENOENT")
{
	char path[512];
	if (p2p_memory_path(path, sizeof(path)) < 0)
		probe_fail("no file to map P2P memory from");
	long long avail = p2p_available();
	int rc = p2p_unbind();
	obs_errno("unbind", rc < 0 ? errno : 0);
	int fd = open(path, O_RDWR);
	obs_errno("open", fd < 0 ? errno : 0);
	if (fd >= 0)
		close(fd);
	rebind_and_report(avail);
}

/* after a rebind: a fresh mapping of the new pool takes pages, holds data, and gives them back; 0 if all of it held */
static int mapping_works(int cycle)
{
	int fd = p2p_open();
	long long avail = p2p_available();
	volatile uint64_t *p = p2p_map(fd, 4 * PAGE);
	if (p == MAP_FAILED) {
		close(fd);
		return 1;
	}
	int bad = 0;
	for (int i = 0; i < 4; i++)
		bad |= touch((volatile char *)p + i * PAGE, 1, 1) != 0;
	/* taken by now on either design: at mmap (merged) or at the first fault (v3) */
	bad |= avail - p2p_available() != 4 * (long long)PAGE;
	for (size_t i = 0; !bad && i < 4 * PAGE / 8; i++)
		p[i] = 0x9e3779b97f4a7c15ULL * (i + 1) + cycle;
	for (size_t i = 0; !bad && i < 4 * PAGE / 8; i++)
		bad |= p[i] != 0x9e3779b97f4a7c15ULL * (i + 1) + cycle;
	munmap((void *)p, 4 * PAGE);
	bad |= p2p_available() != avail;
	close(fd);
	return bad;
}

CASE(rebind_cycles, "five unbind/bind cycles: the pool comes back with the same available every time, and a fresh mapping of it maps, holds data and returns its pages")
{
	long long avail = p2p_available();
	int bad = 0, failed = 0, broken = 0;
	for (int i = 0; i < 5; i++) {
		if (p2p_unbind() < 0 || p2p_bind() < 0) {
			failed++;
			break;
		}
		if (p2p_available() != avail)
			bad++;
		broken += mapping_works(i);
	}
	obs_int("cycles_failed", failed);
	obs_int("cycles_with_other_available", bad);
	obs_int("cycles_with_broken_mapping", broken);
}
