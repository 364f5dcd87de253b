#!/bin/sh
# Extracts the uncompressed ELF vmlinux from an x86 bzImage.
#
#   extract-vmlinux.sh BZIMAGE OUTPUT
#
# Why: qemu boots an ELF vmlinux through its PVH entry point, which skips the kernel's own
# decompressor; under TCG that decompression alone costs 1-3 s of every boot.
#
# The payload is located through the boot protocol header (Documentation/arch/x86/boot.rst)
# rather than by scanning for compression magic: setup_sects at 0x1f1, payload_offset at
# 0x248 and payload_length at 0x24c (protocol 2.08+). The payload ends with a 4-byte
# little-endian uncompressed size that is not part of the compressed stream.
set -eu

img=${1:?usage: extract-vmlinux.sh BZIMAGE OUTPUT}
out=${2:?usage: extract-vmlinux.sh BZIMAGE OUTPUT}

# Reads an unsigned little-endian integer of $2 bytes at offset $1.
le() { od -An -t "u$2" -j "$1" -N "$2" --endian=little "$img" | tr -d ' '; }

[ "$(dd if="$img" bs=1 skip=514 count=4 status=none)" = "HdrS" ] ||
	{ echo "extract-vmlinux: $img is not a bzImage" >&2; exit 1; }
setup_sects=$(le $((0x1f1)) 1)
[ "$setup_sects" -eq 0 ] && setup_sects=4
payload_offset=$(le $((0x248)) 4)
payload_length=$(le $((0x24c)) 4)
start=$(((setup_sects + 1) * 512 + payload_offset))

payload() { tail -c +"$((start + 1))" "$img" | head -c "$((payload_length - 4))"; }

magic=$(payload | head -c 6 | od -An -t x1 | tr -d ' \n')
case "$magic" in
fd377a585a00) payload | xz -dc >"$out.tmp" ;;
28b52ffd*) payload | zstd -dcq >"$out.tmp" ;;
1f8b*) payload | gzip -dc >"$out.tmp" ;;
# LZ4 legacy frames (Debian's cloud kernels); the lz4 tool is optional on the host, and
# fetch-kernel.sh boots the compressed image where this fails.
02214c18*) payload | lz4 -dc >"$out.tmp" ;;
*) echo "extract-vmlinux: unknown payload compression (magic $magic) in $img" >&2; exit 1 ;;
esac || {
	rm -f "$out.tmp"
	echo "extract-vmlinux: cannot decompress the payload of $img" >&2
	exit 1
}

[ "$(head -c 4 "$out.tmp" | od -An -t x1 | tr -d ' \n')" = "7f454c46" ] ||
	{ rm -f "$out.tmp"; echo "extract-vmlinux: payload of $img is not an ELF image" >&2; exit 1; }
mv "$out.tmp" "$out"
