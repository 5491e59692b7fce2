/* P2P memory from C, for the probes (probe.h) and the race workers (race/racer.c): sysfs reads and writes,
 * the provider and its NVMe controllers, where its memory is mapped from, unbind and bind. Nothing here prints
 * a verdict or exits. */
#ifndef P2PDMA_RIG_P2P_H
#define P2PDMA_RIG_P2P_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL

static char p2p_dev[256];  /* /sys/bus/pci/devices/<bdf> */
static char p2p_bdf[32];

static int read_file(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, len - 1);
	int saved = errno;
	close(fd);
	if (n < 0) { errno = saved; return -1; }
	buf[n] = 0;
	return (int)n;
}

static int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, s, strlen(s));
	int saved = errno;
	close(fd);
	if (n < 0) { errno = saved; return -1; }
	return 0;
}

static long long read_ll(const char *path)
{
	char buf[64];
	if (read_file(path, buf, sizeof(buf)) < 0)
		return -1;
	return strtoll(buf, NULL, 0);
}


/* the P2P provider: P2PDMA_PROVIDER=<bdf> or the first PCI device with a p2pmem/ directory; -1 if none */
static int p2p_locate(void)
{
	const char *want = getenv("P2PDMA_PROVIDER");
	if (want && *want) {
		snprintf(p2p_bdf, sizeof(p2p_bdf), "%s", want);
	} else {
		glob_t g;
		if (glob("/sys/bus/pci/devices/*/p2pmem", 0, NULL, &g) != 0 || g.gl_pathc == 0)
			return -1;
		char *p = g.gl_pathv[0] + strlen("/sys/bus/pci/devices/");
		snprintf(p2p_bdf, sizeof(p2p_bdf), "%.*s", (int)(strchr(p, '/') - p), p);
		globfree(&g);
	}
	snprintf(p2p_dev, sizeof(p2p_dev), "/sys/bus/pci/devices/%s", p2p_bdf);
	return 0;
}

static long long p2p_attr(const char *name)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/p2pmem/%s", p2p_dev, name);
	return read_ll(path);
}

static long long p2p_available(void) { return p2p_attr("available"); }

/*
 * Where P2P memory is mapped from: P2PDMA_MEMORY=sysfs-allocate (merged kernels: p2pmem/allocate) or
 * nvme-chardev (the seed's v3 series, 20/20: the provider's NVMe controller, /dev/nvmeN). The rig chooses it
 * from the kernel it built.
 */
static int p2p_v3(void)
{
	const char *m = getenv("P2PDMA_MEMORY");
	return m && !strcmp(m, "nvme-chardev");
}

/* /dev/<name> of the first sysfs entry below the provider that matches `below` (e.g. "nvme/nvme*"); -1 if none */
static int p2p_dev_node(const char *below, char *out, size_t len)
{
	char pattern[512];
	glob_t g;
	snprintf(pattern, sizeof(pattern), "%s/%s", p2p_dev, below);
	if (glob(pattern, 0, NULL, &g) != 0 || g.gl_pathc == 0)
		return -1;
	snprintf(out, len, "/dev/%s", strrchr(g.gl_pathv[0], '/') + 1);
	globfree(&g);
	return 0;
}

/* the file P2P memory is mapped from: <provider>/p2pmem/allocate, or /dev/nvmeN of the provider's controller
 * (looked up again at every call: N can change across unbind/bind); -1 if there is none */
static int p2p_memory_path(char *out, size_t len)
{
	if (!p2p_v3()) {
		snprintf(out, len, "%s/p2pmem/allocate", p2p_dev);
		return 0;
	}
	return p2p_dev_node("nvme/nvme*", out, len);
}

/* mmap `len` bytes of p2pmem; returns MAP_FAILED with errno set */
static void *p2p_map(int fd, size_t len)
{
	return mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
}

/* /dev/nvmeXnY of the provider's first namespace (the provider is its own P2P client) */
static int p2p_nvme_namespace(char *out, size_t len)
{
	return p2p_dev_node("nvme/nvme*/nvme*n1", out, len);
}

/* NVMe controllers by the place the rig's topology gives them: controller i has serial p2pdmarig<i> (rig/qemu.py;
 * the controllers of one NVMe subsystem share the serial of its first). The BDF of controller `index`'s PCI
 * function, the one with P2P memory when `with_p2pmem`; -1 if the machine has no such controller. */
static int nvme_ctrl_bdf_where(int index, int with_p2pmem, char *bdf, size_t len)
{
	char want[32], serial[64], link[512], path[512];
	glob_t g;
	int found = -1;
	snprintf(want, sizeof(want), "p2pdmarig%04d", index);
	if (glob("/sys/class/nvme/nvme*", 0, NULL, &g) != 0)
		return -1;
	for (size_t i = 0; i < g.gl_pathc && found < 0; i++) {
		snprintf(path, sizeof(path), "%s/serial", g.gl_pathv[i]);
		if (read_file(path, serial, sizeof(serial)) < 0 || strncmp(serial, want, strlen(want)))
			continue;
		snprintf(path, sizeof(path), "%s/device", g.gl_pathv[i]);
		ssize_t n = readlink(path, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = 0;
		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/p2pmem", strrchr(link, '/') + 1);
		if (with_p2pmem && access(path, F_OK))
			continue;
		snprintf(bdf, len, "%s", strrchr(link, '/') + 1);
		found = 0;
	}
	globfree(&g);
	return found;
}

static int nvme_ctrl_bdf(int index, char *bdf, size_t len)
{
	return nvme_ctrl_bdf_where(index, 0, bdf, len);
}

/* /dev/nvmeXn1 of controller `index` (its own namespace disk, not a multipath head); -1 if none */
static int nvme_ctrl_namespace(int index, char *out, size_t len)
{
	char bdf[32], pattern[512];
	glob_t g;
	if (nvme_ctrl_bdf(index, bdf, sizeof(bdf)) < 0)
		return -1;
	snprintf(pattern, sizeof(pattern), "/sys/bus/pci/devices/%s/nvme/nvme*/nvme[0-9]*n1", bdf);
	if (glob(pattern, 0, NULL, &g) != 0)
		return -1;
	int found = -1;
	for (size_t i = 0; i < g.gl_pathc && found < 0; i++) {
		const char *name = strrchr(g.gl_pathv[i], '/') + 1;
		if (strchr(name + 4, 'c')) /* nvmeXcYnZ: a path below a multipath head, no /dev node */
			continue;
		snprintf(out, len, "/dev/%s", name);
		found = 0;
	}
	globfree(&g);
	return found;
}


static int wait_path_every(const char *path, int present, int timeout_ms, int step_ms)
{
	for (int t = 0; t < timeout_ms; t += step_ms) {
		if ((access(path, F_OK) == 0) == present)
			return 0;
		usleep(step_ms * 1000);
	}
	return -1;
}

static int wait_path(const char *path, int present, int timeout_ms)
{
	return wait_path_every(path, present, timeout_ms, 50);
}

/* unbind/bind the provider from its driver (nvme) */
static int p2p_unbind(void)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/driver/unbind", p2p_dev);
	return write_file(path, p2p_bdf);
}

/* bind, then wait for p2pmem, looking every step_ms (the race controller looks every 5 ms: a rebind's p2pmem
 * appears in about 40; the probes keep 50, whose timing the seed's v3 cases were measured with) */
static int p2p_bind_polling(int step_ms)
{
	if (write_file("/sys/bus/pci/drivers/nvme/bind", p2p_bdf) < 0)
		return -1;
	char path[512];
	snprintf(path, sizeof(path), "%s/p2pmem/available", p2p_dev);
	/* nvme probes asynchronously: the CMB is registered from the reset work */
	return wait_path_every(path, 1, 20000, step_ms);
}

static int p2p_bind(void)
{
	return p2p_bind_polling(50);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

#endif
