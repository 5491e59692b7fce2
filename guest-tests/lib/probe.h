/* Shared boilerplate of the C probes: case table, JSON observation, p2pmem discovery, SIGBUS catching.
 *
 * A probe binary holds the cases of one area. `probe --list` prints one JSON object per case
 * ({"id","description"}); `probe NAME` runs one case and prints exactly one JSON object:
 *   {"id": "...", "obs": {...}}   what was observed (the rig compares it with guest-tests/expectations.yaml)
 *   {"id": "...", "skip": "why"}  the case could not run here (never a pass)
 * Probes report facts, not verdicts: the expectations live in YAML.
 */
#ifndef P2PDMA_RIG_PROBE_H
#define P2PDMA_RIG_PROBE_H

#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL

/* ------------------------------------------------------------------ case table */
struct probe_case {
	const char *name;
	const char *description;
	void (*fn)(void);
};

#define MAX_CASES 128
static struct probe_case probe_cases[MAX_CASES];
static int probe_ncases;
static const char *probe_area = AREA;

#define CASE(cname, desc)                                                            \
	static void case_##cname(void);                                              \
	__attribute__((constructor)) static void register_##cname(void)              \
	{                                                                            \
		probe_cases[probe_ncases++] = (struct probe_case){#cname, desc, case_##cname}; \
	}                                                                            \
	static void case_##cname(void)

/* ------------------------------------------------------------------ JSON observation */
static char obs_buf[16384];
static size_t obs_len;

static void obs_raw(const char *key, const char *fmt, ...)
{
	va_list ap;
	obs_len += snprintf(obs_buf + obs_len, sizeof(obs_buf) - obs_len, "%s\"%s\": ", obs_len ? ", " : "", key);
	va_start(ap, fmt);
	obs_len += vsnprintf(obs_buf + obs_len, sizeof(obs_buf) - obs_len, fmt, ap);
	va_end(ap);
}

static void obs_int(const char *key, long long v) { obs_raw(key, "%lld", v); }
static void obs_bool(const char *key, int v) { obs_raw(key, "%s", v ? "true" : "false"); }

static void obs_str(const char *key, const char *s)
{
	char esc[1024];
	size_t j = 0;
	for (size_t i = 0; s[i] && j < sizeof(esc) - 8; i++) {
		unsigned char c = s[i];
		if (c == '"' || c == '\\') { esc[j++] = '\\'; esc[j++] = c; }
		else if (c < 0x20) j += snprintf(esc + j, sizeof(esc) - j, "\\u%04x", c);
		else esc[j++] = c;
	}
	esc[j] = 0;
	obs_raw(key, "\"%s\"", esc);
}

/* errno as its name ("EINVAL"), 0 as "OK": what expectations compare against */
static const char *errname(int e)
{
	if (e == 0)
		return "OK";
	const char *n = strerrorname_np(e);
	return n ? n : "E?";
}

static void obs_errno(const char *key, int e) { obs_str(key, errname(e)); }

static void probe_skip(const char *fmt, ...)
{
	char why[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	printf("{\"id\": \"%s.%s\", \"skip\": \"%s\"}\n", probe_area, getenv("PROBE_CASE"), why);
	fflush(stdout);
	exit(0);
}

/* an environment problem the probe cannot get past: reported as an error, never a pass */
static void probe_fail(const char *fmt, ...)
{
	char why[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	printf("{\"id\": \"%s.%s\", \"error\": \"%s (errno %s)\"}\n", probe_area, getenv("PROBE_CASE"), why,
	       errname(errno));
	fflush(stdout);
	exit(0);
}

/* ------------------------------------------------------------------ sysfs helpers */
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

/* the P2P provider: P2PDMA_PROVIDER=<bdf> or the first PCI device with a p2pmem/ directory */
static void p2p_find(void)
{
	const char *want = getenv("P2PDMA_PROVIDER");
	if (want && *want) {
		snprintf(p2p_bdf, sizeof(p2p_bdf), "%s", want);
	} else {
		glob_t g;
		if (glob("/sys/bus/pci/devices/*/p2pmem", 0, NULL, &g) != 0 || g.gl_pathc == 0)
			probe_fail("no PCI device has a p2pmem/ directory (no P2P memory registered)");
		char *p = g.gl_pathv[0] + strlen("/sys/bus/pci/devices/");
		snprintf(p2p_bdf, sizeof(p2p_bdf), "%.*s", (int)(strchr(p, '/') - p), p);
		globfree(&g);
	}
	snprintf(p2p_dev, sizeof(p2p_dev), "/sys/bus/pci/devices/%s", p2p_bdf);
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

/* the file p2p_open() opens: <provider>/p2pmem/allocate, or /dev/nvmeN of the provider's controller */
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

static int p2p_memory_path(char *out, size_t len)
{
	if (!p2p_v3()) {
		snprintf(out, len, "%s/p2pmem/allocate", p2p_dev);
		return 0;
	}
	return p2p_dev_node("nvme/nvme*", out, len);
}

static int p2p_open(void)
{
	char path[512];
	if (p2p_memory_path(path, sizeof(path)) < 0)
		probe_fail("the provider %s has no NVMe controller (nvme/nvme*): no /dev/nvmeN to map", p2p_bdf);
	int fd = open(path, O_RDWR);
	if (fd < 0)
		probe_fail("open %s", path);
	return fd;
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

/* make controller `index` the P2P provider of this case (instead of the first device with p2pmem/) */
static void p2p_use_ctrl(int index)
{
	char bdf[32];
	if (nvme_ctrl_bdf(index, bdf, sizeof(bdf)) < 0)
		probe_skip("the machine has no NVMe controller %d (this case needs its topology)", index);
	if (nvme_ctrl_bdf_where(index, 1, p2p_bdf, sizeof(p2p_bdf)) < 0)
		probe_fail("NVMe controller %d (%s) has no p2pmem/", index, bdf);
	snprintf(p2p_dev, sizeof(p2p_dev), "/sys/bus/pci/devices/%s", p2p_bdf);
}

static int wait_path(const char *path, int present, int timeout_ms)
{
	for (int t = 0; t < timeout_ms; t += 50) {
		if ((access(path, F_OK) == 0) == present)
			return 0;
		usleep(50000);
	}
	return -1;
}

/* unbind/bind the provider from its driver (nvme) */
static int p2p_unbind(void)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/driver/unbind", p2p_dev);
	return write_file(path, p2p_bdf);
}

static int p2p_bind(void)
{
	if (write_file("/sys/bus/pci/drivers/nvme/bind", p2p_bdf) < 0)
		return -1;
	char path[512];
	snprintf(path, sizeof(path), "%s/p2pmem/available", p2p_dev);
	/* nvme probes asynchronously: the CMB is registered from the reset work */
	return wait_path(path, 1, 20000);
}

/* ------------------------------------------------------------------ fault catching */
static sigjmp_buf fault_jmp;
static volatile int fault_signo, fault_code;

static void fault_handler(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	fault_signo = sig;
	fault_code = si->si_code;
	siglongjmp(fault_jmp, 1);
}

/* read (write=0) or write (write=1) one byte; returns 0, or the signal number that stopped it */
static int touch(volatile char *p, int write, char value)
{
	struct sigaction sa = {0}, old_bus, old_segv;
	sa.sa_sigaction = fault_handler;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGBUS, &sa, &old_bus);
	sigaction(SIGSEGV, &sa, &old_segv);
	fault_signo = 0;
	fault_code = 0;
	if (sigsetjmp(fault_jmp, 1) == 0) {
		if (write)
			*p = value;
		else
			(void)*p;
	}
	sigaction(SIGBUS, &old_bus, NULL);
	sigaction(SIGSEGV, &old_segv, NULL);
	return fault_signo;
}

static const char *signame(int sig)
{
	switch (sig) {
	case 0: return "none";
	case SIGBUS: return "SIGBUS";
	case SIGSEGV: return "SIGSEGV";
	case SIGKILL: return "SIGKILL";
	default: return "other";
	}
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* CPU copies into p2pmem with 8-byte accesses: the CMB is MMIO in QEMU, where wide SIMD stores are unsafe
 * under KVM (docs/behaviour.md section 7, rig notes) */
static void p2p_copy(volatile void *dst, const void *src, size_t len)
{
	volatile uint64_t *d = dst;
	const uint64_t *s = src;
	for (size_t i = 0; i < len / 8; i++)
		d[i] = s[i];
}

static void p2p_zero(volatile void *dst, size_t len)
{
	volatile uint64_t *d = dst;
	for (size_t i = 0; i < len / 8; i++)
		d[i] = 0;
}

/* FNV-1a, enough to compare buffers across a DMA round trip */
static uint64_t hash_bytes(const volatile unsigned char *p, size_t n)
{
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 1099511628211ULL; }
	return h;
}

/* O_DIRECT of `len` bytes from p2pmem to the block device `dev` and back into p2pmem: `write`, `read` (errno
 * names) and `data_match` (what came back is what was written). The client is the device behind `dev`. */
static void dio_roundtrip(const char *dev, size_t len)
{
	int fd = open(dev, O_RDWR | O_DIRECT);
	if (fd < 0)
		probe_fail("open %s", dev);
	int pfd = p2p_open();
	unsigned char *buf = p2p_map(pfd, 2 * len);
	if (buf == MAP_FAILED)
		probe_fail("mmap");
	unsigned char *out = buf, *in = buf + len;
	for (size_t i = 0; i < len; i++)
		out[i] = (unsigned char)(i * 13 + 1);
	memset(in, 0, len);
	ssize_t w = pwrite(fd, out, len, 0);
	obs_errno("write", w < 0 ? errno : 0);
	ssize_t r = pread(fd, in, len, 0);
	obs_errno("read", r < 0 ? errno : 0);
	obs_bool("data_match", w == (ssize_t)len && r == (ssize_t)len && hash_bytes(out, len) == hash_bytes(in, len));
	munmap(buf, 2 * len);
	close(pfd);
	close(fd);
}

/* ------------------------------------------------------------------ main */
int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 2 && !strcmp(argv[1], "--list")) {
		for (int i = 0; i < probe_ncases; i++)
			printf("{\"id\": \"%s.%s\", \"description\": \"%s\"}\n", probe_area, probe_cases[i].name,
			       probe_cases[i].description);
		return 0;
	}
	if (argc != 2) {
		fprintf(stderr, "usage: %s --list | CASE\n", argv[0]);
		return 2;
	}
	for (int i = 0; i < probe_ncases; i++) {
		if (strcmp(argv[1], probe_cases[i].name))
			continue;
		setenv("PROBE_CASE", argv[1], 1);
		p2p_find();
		probe_cases[i].fn();
		printf("{\"id\": \"%s.%s\", \"obs\": {%s}}\n", probe_area, argv[1], obs_buf);
		return 0;
	}
	fprintf(stderr, "%s: no case %s\n", argv[0], argv[1]);
	return 2;
}

#endif
