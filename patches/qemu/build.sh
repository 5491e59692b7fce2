#!/bin/sh
# `make qemu-patched`: the installed QEMU's own Debian source (the same version as qemu-system-x86, through a
# private apt state: the host's apt configuration is left as it is), with patches/qemu/*.patch, built for
# x86_64 only. The binary goes to $P2PDMA_RIG_CACHE/qemu-patched/<version>/qemu-system-x86_64, written
# under a temporary name and renamed when complete; point machine.qemu_binary at it (it prints how).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cache=${P2PDMA_RIG_CACHE:-$HOME/.cache/p2pdma-rig}
version=$(dpkg-query -W -f='${source:Version}' qemu-system-x86)  # the source's: no binNMU suffix
key=$({ echo "$version"; cat "$here"/*.patch; } | sha256sum | cut -c1-16)
out=$cache/qemu-patched/$key
if [ -x "$out/qemu-system-x86_64" ]; then
	echo "patched QEMU $version already built: $out/qemu-system-x86_64"
	exit 0
fi

work=$cache/qemu-src
apt_dir=$work/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/state"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
{
	echo "deb-src [signed-by=$keyring] http://deb.debian.org/debian bookworm main"
	echo "deb-src [signed-by=$keyring] http://deb.debian.org/debian bookworm-updates main"
	echo "deb-src [signed-by=$keyring] http://deb.debian.org/debian-security bookworm-security main"
} > "$apt_dir/sources.list"
apt="-o Dir::Etc::SourceList=$apt_dir/sources.list -o Dir::Etc::SourceParts=/dev/null
     -o Dir::State::Lists=$apt_dir/lists -o Dir::Cache=$apt_dir/cache -o Dir::State=$apt_dir/state"

src=$work/qemu-$version
if [ ! -f "$src/.extracted" ]; then
	rm -rf "$src" "$work/dl"
	mkdir -p "$work/dl"
	echo "[qemu] downloading Debian's source of qemu $version"
	# shellcheck disable=SC2086 # $apt is a list of options
	apt-get $apt -q update
	# shellcheck disable=SC2086
	(cd "$work/dl" && apt-get $apt -q source --download-only "qemu=$version")
	(cd "$work/dl" && dpkg-source -q -x ./*.dsc "$src")
	touch "$src/.extracted"
fi

build=$work/build-$key
rm -rf "$build"
cp -a "$src" "$build"
for p in "$here"/*.patch; do
	echo "[qemu] applying $(basename "$p")"
	patch -d "$build" -p1 --quiet < "$p"
done
echo "[qemu] configuring (x86_64-softmmu only)"
(cd "$build" && ./configure --target-list=x86_64-softmmu --disable-docs --disable-tools --disable-werror \
	--enable-fdt=system --enable-slirp --firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu \
	> "$build/configure.log" 2>&1) || { tail -20 "$build/configure.log"; exit 1; }
echo "[qemu] building qemu-system-x86_64 (about 20 minutes on 2 cores; log: $build/build.log)"
ninja -C "$build/build" qemu-system-x86_64 > "$build/build.log" 2>&1 || { tail -30 "$build/build.log"; exit 1; }
mkdir -p "$out"
cp "$build/build/qemu-system-x86_64" "$out/qemu-system-x86_64.tmp"
mv "$out/qemu-system-x86_64.tmp" "$out/qemu-system-x86_64"
rm -rf "$build"
echo "patched QEMU $version: $out/qemu-system-x86_64"
echo "use it: a rig.yaml with   machine: {qemu_binary: $out/qemu-system-x86_64}   and rig run --config FILE"
