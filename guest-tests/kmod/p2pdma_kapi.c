// SPDX-License-Identifier: GPL-2.0
/*
 * p2pdma_kapi: the in-kernel P2PDMA API as its kernel users call it (nvmet's configfs `p2pmem` attribute, a
 * driver registering a BAR, a DMA client that is not a PCI device), for the rig's `kapi` probe cases
 * (guest-tests/kapi.c). Userspace reaches none of these branches: no driver in the rig's guest calls them with
 * these arguments.
 *
 * Write "<test> <provider BDF>" to /sys/kernel/debug/p2pdma_kapi/run; read the same file for what the kernel
 * returned, one observation per line: "<kind> <key> <value>", kind e (an errno: 0 or -E...), i (an integer),
 * b (0/1), s (a string). The module reports facts; guest-tests/expectations.yaml judges them.
 */
#include <linux/debugfs.h>
#include <linux/dma-mapping.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/pci-p2pdma.h>
#include <linux/platform_device.h>
#include <linux/scatterlist.h>
#include <linux/seq_buf.h>

static struct dentry *kapi_dir;
static struct platform_device *not_pci; /* a DMA client on the platform bus */
static DEFINE_MUTEX(kapi_lock);
static char result_buf[4096];
static struct seq_buf result;

#define OBS(kind, key, fmt, ...) seq_buf_printf(&result, kind " " key " " fmt "\n", ##__VA_ARGS__)

/* the BAR whose bus addresses hold `bus` (-1: none) */
static int bar_of(struct pci_dev *pdev, pci_bus_addr_t bus)
{
	int i;

	for (i = 0; i < PCI_STD_NUM_BARS; i++)
		if ((pci_resource_flags(pdev, i) & IORESOURCE_MEM) && pci_resource_len(pdev, i) &&
		    bus >= pci_bus_address(pdev, i) &&
		    bus - pci_bus_address(pdev, i) < pci_resource_len(pdev, i))
			return i;
	return -1;
}

/* the first PCI device (bus order) with an I/O-port BAR, with a reference; its BAR in *bar */
static struct pci_dev *device_with_io_bar(int *bar)
{
	struct pci_dev *pdev = NULL;
	int i;

	for_each_pci_dev(pdev)
		for (i = 0; i < PCI_STD_NUM_BARS; i++)
			if ((pci_resource_flags(pdev, i) & IORESOURCE_IO) && pci_resource_len(pdev, i)) {
				*bar = i;
				return pdev; /* for_each_pci_dev holds the reference of the one it stops at */
			}
	return NULL;
}

/* the first PCI device (bus order) without P2P memory, with a reference */
static struct pci_dev *device_without_p2pmem(void)
{
	struct pci_dev *pdev = NULL;

	for_each_pci_dev(pdev)
		if (!rcu_access_pointer(pdev->p2pdma))
			return pdev;
	return NULL;
}

/* pci_p2pdma_add_resource() refuses what is not a memory range inside one BAR, before it changes anything */
static void test_add_resource(struct pci_dev *pdev)
{
	struct pci_dev *other;
	void *page = pci_alloc_p2pmem(pdev, PAGE_SIZE);
	resource_size_t len;
	int bar, io_bar;

	if (!page) {
		OBS("s", "error", "pci_alloc_p2pmem(PAGE_SIZE) of %s failed", pci_name(pdev));
		return;
	}
	bar = bar_of(pdev, pci_p2pmem_virt_to_bus(pdev, page));
	pci_free_p2pmem(pdev, page, PAGE_SIZE);
	if (bar < 0) {
		OBS("s", "error", "no BAR of %s holds its pool's bus address", pci_name(pdev));
		return;
	}
	len = pci_resource_len(pdev, bar);
	OBS("i", "pool_bar", "%d", bar);
	other = device_with_io_bar(&io_bar);
	if (other) {
		OBS("s", "io_bar_device", "%s BAR %d", pci_name(other), io_bar);
		OBS("e", "io_bar", "%d", pci_p2pdma_add_resource(other, io_bar, 0, 0));
		pci_dev_put(other);
	}
	OBS("e", "offset_at_bar_end", "%d", pci_p2pdma_add_resource(pdev, bar, 0, len));
	OBS("e", "range_past_bar_end", "%d", pci_p2pdma_add_resource(pdev, bar, len, PAGE_SIZE));
	OBS("e", "size_past_bar_end", "%d", pci_p2pdma_add_resource(pdev, bar, len + PAGE_SIZE, 0));
}

/* pci_p2pmem_virt_to_bus(): 0 for NULL and for a device without P2P memory; a pool address in the BAR */
static void test_virt_to_bus(struct pci_dev *pdev)
{
	void *page = pci_alloc_p2pmem(pdev, PAGE_SIZE);
	struct pci_dev *other;
	pci_bus_addr_t bus;
	int bar;

	if (!page) {
		OBS("s", "error", "pci_alloc_p2pmem(PAGE_SIZE) of %s failed", pci_name(pdev));
		return;
	}
	bus = pci_p2pmem_virt_to_bus(pdev, page);
	bar = bar_of(pdev, bus);
	OBS("b", "pool_page_in_a_bar", "%d", bar >= 0);
	if (bar >= 0)
		OBS("b", "pool_page_bus_minus_cpu_equals_bar_offset", "%d",
		    bus - pci_bus_address(pdev, bar) == virt_to_phys(page) - pci_resource_start(pdev, bar));
	OBS("i", "null_address", "%llu", (unsigned long long)pci_p2pmem_virt_to_bus(pdev, NULL));
	other = device_without_p2pmem();
	if (other) {
		OBS("s", "device_without_p2pmem", "%s", pci_name(other));
		OBS("i", "other_device", "%llu", (unsigned long long)pci_p2pmem_virt_to_bus(other, page));
		pci_dev_put(other);
	}
	pci_free_p2pmem(pdev, page, PAGE_SIZE);
}

/* dma_map_sgtable() of p2pmem for a client that is not a PCI device: no P2P path, -EREMOTEIO */
static void map_for(struct device *client, const char *key, struct pci_dev *pdev)
{
	unsigned int nents = 0;
	struct scatterlist *sgl = pci_p2pmem_alloc_sgl(pdev, &nents, PAGE_SIZE);
	struct sg_table sgt = {};
	int ret;

	if (!sgl) {
		seq_buf_printf(&result, "s error pci_p2pmem_alloc_sgl(PAGE_SIZE) of %s failed\n", pci_name(pdev));
		return;
	}
	sgt.sgl = sgl;
	sgt.orig_nents = nents;
	ret = dma_map_sgtable(client, &sgt, DMA_BIDIRECTIONAL, 0);
	seq_buf_printf(&result, "e %s %d\n", key, ret);
	if (!ret) {
		seq_buf_printf(&result, "i %s_segments %u\n", key, sgt.nents);
		seq_buf_printf(&result, "b %s_address_is_bus_address %d\n", key,
			       sg_dma_address(sgt.sgl) == pci_p2pmem_virt_to_bus(pdev, sg_virt(sgl)));
		dma_unmap_sgtable(client, &sgt, DMA_BIDIRECTIONAL, 0);
	}
	pci_p2pmem_free_sgl(pdev, sgl);
}

static void test_dma_map(struct pci_dev *pdev)
{
	map_for(&not_pci->dev, "platform_client", pdev);
	map_for(&pdev->dev, "provider_as_client", pdev);
}

/* what nvmet's configfs `p2pmem` attribute does with what a user writes, and how it finds a provider */
static void enable(const char *key, const char *input, struct pci_dev *provider)
{
	struct pci_dev *p2p_dev = (struct pci_dev *)-1L;
	bool use = false;
	int ret = pci_p2pdma_enable_store(input, &p2p_dev, &use);

	seq_buf_printf(&result, "e enable_%s %d\n", key, ret);
	if (ret)
		return;
	seq_buf_printf(&result, "b enable_%s_use %d\n", key, use);
	seq_buf_printf(&result, "s enable_%s_device %s\n", key,
		       p2p_dev == (struct pci_dev *)-1L ? "unset" : !p2p_dev ? "none" :
		       p2p_dev == provider ? "provider" : pci_name(p2p_dev));
	if (p2p_dev && p2p_dev != (struct pci_dev *)-1L)
		pci_dev_put(p2p_dev);
}

static void test_find_enable(struct pci_dev *pdev)
{
	struct device *self = &pdev->dev, *platform = &not_pci->dev;
	struct pci_dev *found, *other = device_without_p2pmem();
	char name[64];

	found = pci_p2pmem_find_many(&self, 1);
	seq_buf_printf(&result, "s find_many_for_provider %s\n",
		       !found ? "none" : found == pdev ? "provider" : pci_name(found));
	pci_dev_put(found);
	found = pci_p2pmem_find_many(&platform, 1);
	seq_buf_printf(&result, "s find_many_for_platform_client %s\n", found ? pci_name(found) : "none");
	pci_dev_put(found);
	seq_buf_printf(&result, "i distance_to_itself %d\n", pci_p2pdma_distance_many(pdev, &self, 1, true));
	seq_buf_printf(&result, "i distance_no_clients %d\n", pci_p2pdma_distance_many(pdev, &self, 0, true));
	seq_buf_printf(&result, "i distance_platform_client %d\n",
		       pci_p2pdma_distance_many(pdev, &platform, 1, true));

	snprintf(name, sizeof(name), "%s\n", pci_name(pdev));
	enable("provider_bdf", name, pdev);
	if (other) {
		snprintf(name, sizeof(name), "%s\n", pci_name(other));
		enable("bdf_without_p2pmem", name, pdev);
		pci_dev_put(other);
	}
	enable("absent_bdf", "0000:fe:1f.7\n", pdev);
	enable("one", "1\n", pdev);
	enable("zero", "0\n", pdev);
	enable("off", "off\n", pdev);
	enable("garbage", "auto\n", pdev);
}

static const struct {
	const char *name;
	void (*fn)(struct pci_dev *pdev);
} tests[] = {
	{"add_resource", test_add_resource},
	{"virt_to_bus", test_virt_to_bus},
	{"dma_map", test_dma_map},
	{"find_enable", test_find_enable},
};

static ssize_t run_write(struct file *file, const char __user *ubuf, size_t count, loff_t *ppos)
{
	unsigned int domain, bus, slot, fn;
	char cmd[128], test[32];
	struct pci_dev *pdev;
	size_t i;

	if (count >= sizeof(cmd))
		return -EINVAL;
	if (copy_from_user(cmd, ubuf, count))
		return -EFAULT;
	cmd[count] = 0;
	if (sscanf(cmd, "%31s %x:%x:%x.%x", test, &domain, &bus, &slot, &fn) != 5)
		return -EINVAL;
	pdev = pci_get_domain_bus_and_slot(domain, bus, PCI_DEVFN(slot, fn));
	if (!pdev)
		return -ENODEV;
	mutex_lock(&kapi_lock);
	seq_buf_init(&result, result_buf, sizeof(result_buf));
	for (i = 0; i < ARRAY_SIZE(tests); i++)
		if (!strcmp(tests[i].name, test))
			break;
	if (i < ARRAY_SIZE(tests))
		tests[i].fn(pdev);
	mutex_unlock(&kapi_lock);
	pci_dev_put(pdev);
	return i < ARRAY_SIZE(tests) ? count : -ENOENT;
}

static ssize_t run_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos)
{
	ssize_t ret;

	mutex_lock(&kapi_lock);
	ret = simple_read_from_buffer(ubuf, count, ppos, result_buf, seq_buf_used(&result));
	mutex_unlock(&kapi_lock);
	return ret;
}

static const struct file_operations run_fops = {
	.owner = THIS_MODULE,
	.write = run_write,
	.read = run_read,
};

static int __init kapi_init(void)
{
	int ret;

	seq_buf_init(&result, result_buf, sizeof(result_buf));
	not_pci = platform_device_register_simple("p2pdma-kapi", PLATFORM_DEVID_NONE, NULL, 0);
	if (IS_ERR(not_pci))
		return PTR_ERR(not_pci);
	ret = dma_coerce_mask_and_coherent(&not_pci->dev, DMA_BIT_MASK(64));
	if (ret) {
		platform_device_unregister(not_pci);
		return ret;
	}
	kapi_dir = debugfs_create_dir("p2pdma_kapi", NULL);
	debugfs_create_file("run", 0600, kapi_dir, NULL, &run_fops);
	return 0;
}

static void __exit kapi_exit(void)
{
	debugfs_remove_recursive(kapi_dir);
	platform_device_unregister(not_pci);
}

module_init(kapi_init);
module_exit(kapi_exit);
MODULE_DESCRIPTION("p2pdma-rig: the in-kernel P2PDMA API as its kernel users call it");
MODULE_LICENSE("GPL");
