/* mmap of /sys/bus/pci/devices/<bdf>/p2pmem/allocate (p2pdma-behaviour.md section 1.2). */
#define AREA "mmap"
#include "lib/probe.h"

CASE(shared_1m, "MAP_SHARED 1 MiB: available drops by the mapped size and comes back after munmap")
{
	int fd = p2p_open();
	long long before = p2p_available();
	void *p = p2p_map(fd, 1 << 20);
	obs_errno("mmap", p == MAP_FAILED ? errno : 0);
	if (p == MAP_FAILED)
		return;
	long long during = p2p_available();
	obs_int("available_drop", before - during);
	obs_bool("touch_ok", touch(p, 1, 1) == 0 && touch((char *)p + (1 << 20) - 1, 0, 0) == 0);
	munmap(p, 1 << 20);
	obs_int("available_restored_delta", p2p_available() - before);
	close(fd);
}

CASE(private, "MAP_PRIVATE is refused")
{
	int fd = p2p_open();
	void *p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	obs_errno("mmap", p == MAP_FAILED ? errno : 0);
	if (p != MAP_FAILED)
		munmap(p, PAGE);
	close(fd);
}

CASE(nonzero_offset, "a non-zero file offset is refused")
{
	int fd = p2p_open();
	void *p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, PAGE);
	obs_errno("mmap", p == MAP_FAILED ? errno : 0);
	if (p != MAP_FAILED)
		munmap(p, PAGE);
	close(fd);
}

CASE(over_available, "asking for more than available fails at mmap time")
{
	int fd = p2p_open();
	long long avail = p2p_available();
	size_t len = ((avail + PAGE) & ~(PAGE - 1)) + PAGE;
	void *p = p2p_map(fd, len);
	int err = p == MAP_FAILED ? errno : 0;
	obs_errno("mmap", err);
	if (p != MAP_FAILED) {
		/* v3 semantics: the shortage shows up at first touch instead */
		obs_str("first_touch", signame(touch(p, 0, 0)));
		munmap(p, len);
	}
	obs_int("available_delta", p2p_available() - avail);
	close(fd);
}

CASE(one_page, "the smallest mapping, one page, works and holds data")
{
	int fd = p2p_open();
	volatile char *p = p2p_map(fd, PAGE);
	obs_errno("mmap", p == MAP_FAILED ? errno : 0);
	if (p == MAP_FAILED)
		return;
	int sig = touch(p, 1, 0x5a);
	obs_str("write", signame(sig));
	obs_bool("readback_ok", sig == 0 && p[0] == 0x5a);
	munmap((void *)p, PAGE);
	close(fd);
}

CASE(all_available, "the whole available pool maps in one piece, then one more page fails")
{
	int fd = p2p_open();
	long long avail = p2p_available();
	size_t len = avail & ~(PAGE - 1);
	void *p = p2p_map(fd, len);
	obs_errno("mmap_all", p == MAP_FAILED ? errno : 0);
	if (p == MAP_FAILED)
		return;
	obs_int("available_left", p2p_available());
	void *q = p2p_map(fd, PAGE);
	obs_errno("mmap_one_more", q == MAP_FAILED ? errno : 0);
	if (q != MAP_FAILED)
		munmap(q, PAGE);
	munmap(p, len);
	obs_int("available_restored_delta", p2p_available() - avail);
	close(fd);
}

CASE(partial_munmap, "munmap of one page of a mapping returns exactly that page to the pool")
{
	int fd = p2p_open();
	char *p = p2p_map(fd, 16 * PAGE);
	if (p == MAP_FAILED)
		probe_fail("mmap 16 pages");
	long long before = p2p_available();
	munmap(p + 4 * PAGE, PAGE);
	obs_int("available_gain", p2p_available() - before);
	obs_str("unmapped_page_read", signame(touch(p + 4 * PAGE, 0, 0)));
	obs_str("neighbour_read", signame(touch(p + 5 * PAGE, 0, 0)));
	munmap(p, 16 * PAGE);
	close(fd);
}

CASE(fragmented_pool, "a pool fragmented by freeing every other page refuses a 2-page mapping (ENOMEM)")
{
	int fd = p2p_open();
	long long avail = p2p_available();
	size_t len = avail & ~(PAGE - 1);
	char *p = p2p_map(fd, len);
	if (p == MAP_FAILED)
		probe_fail("mmap of the whole pool");
	for (size_t off = 0; off < len; off += 2 * PAGE)
		munmap(p + off, PAGE);
	obs_bool("half_free", p2p_available() >= (long long)(len / 2) - (long long)PAGE);
	void *q = p2p_map(fd, 2 * PAGE);
	obs_errno("mmap_2_pages", q == MAP_FAILED ? errno : 0);
	if (q != MAP_FAILED)
		munmap(q, 2 * PAGE);
	munmap(p, len);
	obs_int("available_restored_delta", p2p_available() - avail);
	close(fd);
}

CASE(fork_shared, "a forked child's write is seen by the parent (the pages are shared, not copied)")
{
	int fd = p2p_open();
	volatile char *p = p2p_map(fd, PAGE);
	if (p == MAP_FAILED)
		probe_fail("mmap");
	p[0] = 'P';
	pid_t pid = fork();
	if (pid == 0) {
		p[0] = 'C';
		_exit(0);
	}
	int st;
	waitpid(pid, &st, 0);
	obs_bool("child_exited_ok", WIFEXITED(st) && WEXITSTATUS(st) == 0);
	obs_bool("parent_sees_child_write", p[0] == 'C');
	munmap((void *)p, PAGE);
	close(fd);
}

CASE(smaps_flags, "/proc/self/smaps shows a shared mixed map with Rss counted")
{
	int fd = p2p_open();
	char *p = p2p_map(fd, 4 * PAGE);
	if (p == MAP_FAILED)
		probe_fail("mmap");
	for (int i = 0; i < 4; i++)
		p[i * PAGE] = 1;
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512], flags[256] = "", start[32];
	long rss = -1;
	int in = 0;
	snprintf(start, sizeof(start), "%lx-", (unsigned long)p);
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, start, strlen(start)))
			in = 1;
		else if (in && strchr(line, '-') && strchr(line, ' ') && strchr(line, '-') < strchr(line, ' ') &&
			 !strchr(line, ':'))
			break;
		if (in && !strncmp(line, "Rss:", 4))
			rss = strtol(line + 4, NULL, 10);
		if (in && !strncmp(line, "VmFlags:", 8)) {
			snprintf(flags, sizeof(flags), "%s", line + 9);
			flags[strcspn(flags, "\n")] = 0;
			break;
		}
	}
	fclose(f);
	obs_int("rss_kb", rss);
	obs_bool("shared", strstr(flags, "sh") != NULL);
	obs_bool("mixedmap", strstr(flags, "mm") != NULL);
	obs_bool("io_or_pfnmap", strstr(flags, "io") != NULL || strstr(flags, "pf") != NULL);
	obs_str("vmflags", flags);
	munmap(p, 4 * PAGE);
	close(fd);
}
