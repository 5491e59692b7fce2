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

#include "p2p.h"

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

/* ------------------------------------------------------------------ the provider, or an error */
static void p2p_find(void)
{
	if (p2p_locate() < 0)
		probe_fail("no PCI device has a p2pmem/ directory (no P2P memory registered)");
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
