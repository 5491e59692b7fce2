/* Data left in p2pmem by a previous owner (docs/behaviour.md sections 1.2 and 8.8). */
#define AREA "leak"
#include "lib/probe.h"

static const char secret[] = "SECRET-FROM-A-p2pdma-rig";

CASE(data_after_free, "a new mapping must not see the bytes a previous process left in the pool")
{
	long long avail = p2p_available();
	size_t len = avail & ~(PAGE - 1);
	pid_t pid = fork();
	if (pid == 0) {
		/* process A: fill the whole pool with the secret, then exit (pages go back to the pool) */
		int fd = p2p_open();
		char *p = p2p_map(fd, len);
		if (p == MAP_FAILED)
			_exit(1);
		for (size_t off = 0; off < len; off += PAGE)
			memcpy(p + off, secret, sizeof(secret));
		_exit(0);
	}
	int st;
	waitpid(pid, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		probe_fail("process A could not map the pool");
	/* process B: map one page anywhere in the pool */
	int fd = p2p_open();
	char *p = p2p_map(fd, PAGE);
	if (p == MAP_FAILED)
		probe_fail("mmap");
	obs_bool("sees_previous_data", memcmp(p, secret, sizeof(secret)) == 0);
	munmap(p, PAGE);
	close(fd);
}
