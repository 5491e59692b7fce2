/* The in-kernel P2PDMA API as its kernel users call it (docs/behaviour.md section 11): nvmet's configfs
 * `p2pmem` attribute (pci_p2pdma_enable_store, pci_p2pmem_find_many, pci_p2pdma_distance_many), a driver
 * registering a range that is not inside one memory BAR (pci_p2pdma_add_resource), a DMA client that is not a
 * PCI device (dma_map_sgtable of p2pmem), pci_p2pmem_virt_to_bus. No program reaches these branches through
 * `allocate`: the rig's test module (guest-tests/kmod/p2pdma_kapi.c, built against the kernel under test)
 * calls them and reports what they returned; this probe loads it, runs one of its tests on the provider, checks
 * that the pool is as it was, and unloads it. */
#define AREA "kapi"
#include "lib/probe.h"

#include <libgen.h>
#include <sys/syscall.h>

#define MODULE_NAME "p2pdma_kapi"
#define RUN_FILE "/sys/kernel/debug/" MODULE_NAME "/run"

static void module_load(void)
{
	char exe[512], path[600];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n < 0)
		probe_fail("readlink /proc/self/exe");
	exe[n] = 0;
	snprintf(path, sizeof(path), "%s/%s.ko", dirname(exe), MODULE_NAME);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		probe_skip("no test module %s: the rig did not build one for this kernel (see the run's log)", path);
	if (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST)
		probe_fail("finit_module %s", path);
	close(fd);
}

/* one test of the module on the provider: its observations, as the module typed them */
static void module_test(const char *test)
{
	char cmd[128], out[4096];
	snprintf(cmd, sizeof(cmd), "%s %s", test, p2p_bdf);
	if (write_file(RUN_FILE, cmd) < 0)
		probe_fail("write '%s' to %s", cmd, RUN_FILE);
	if (read_file(RUN_FILE, out, sizeof(out)) < 0)
		probe_fail("read %s", RUN_FILE);
	for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
		char kind, key[128];
		int used = 0;
		if (sscanf(line, "%c %127s %n", &kind, key, &used) < 2 || !used)
			probe_fail("unreadable line from the module: %s", line);
		const char *value = line + used;
		if (!strcmp(key, "error"))
			probe_fail("the module's test %s: %s", test, value);
		switch (kind) {
		case 'e': obs_errno(key, -atoi(value)); break;
		case 'i': obs_int(key, atoll(value)); break;
		case 'b': obs_bool(key, atoi(value)); break;
		default: obs_str(key, value); break;
		}
	}
}

static void kapi_case(const char *test)
{
	p2p_find();
	long long size = p2p_attr("size"), avail = p2p_available();
	module_load();
	module_test(test);
	/* nothing the module called may leave a trace in the pool: what it took it gave back, and no failed
	 * registration changed the pool's size */
	obs_int("size_delta", p2p_attr("size") - size);
	obs_int("available_delta", p2p_available() - avail);
	obs_errno("unload", syscall(SYS_delete_module, MODULE_NAME, O_NONBLOCK) < 0 ? errno : 0);
}

CASE(add_resource_invalid, "pci_p2pdma_add_resource with a range that is not inside one memory BAR (an I/O BAR, an offset at the BAR's end, a size past it): EINVAL, the pool unchanged")
{
	kapi_case("add_resource");
}

CASE(virt_to_bus, "pci_p2pmem_virt_to_bus: a pool page's bus address lies in the provider's BAR; NULL and a device without P2P memory give 0")
{
	kapi_case("virt_to_bus");
}

CASE(dma_map_non_pci_client, "dma_map_sgtable of p2pmem for a platform device (not PCI): EREMOTEIO; for the provider itself: mapped to the bus address")
{
	kapi_case("dma_map");
}

CASE(find_and_enable, "nvmet's p2pmem attribute: pci_p2pdma_enable_store parses a provider's BDF, a device without P2P memory, an absent BDF, booleans, garbage; pci_p2pmem_find_many and pci_p2pdma_distance_many for PCI and platform clients")
{
	kapi_case("find_enable");
}
