#!/bin/sh
# Mesa's lavapipe (software Vulkan, mesa-vulkan-drivers >= 25 from bookworm-backports) so that
# LiteRT's GPU accelerator runs on a machine without a GPU: its numbers are the GPU's
# arithmetic, its speed means nothing. bookworm's own Mesa 22.3 finds no adapter.
# The backports suite is added on the mirror this machine's apt already uses for bookworm
# (its deb822 or one-line sources), so the script works behind any mirror and names none.
# Run as root on Debian 12; idempotent.
set -eu
mirror=$(grep -rhE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list \
             /etc/apt/sources.list.d/*.list 2>/dev/null \
         | grep -vE 'security|nodesource|cloud' \
         | sed -E 's/^URIs:[[:space:]]*//; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//' \
         | awk '{print $1}' | head -n 1)
if [ -z "$mirror" ]; then
    echo "install_gpu_driver: no Debian mirror found in /etc/apt/sources.list{,.d}" >&2
    exit 1
fi
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
    "$mirror" "$keyring" > /etc/apt/sources.list.d/backports.sources
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -t bookworm-backports mesa-vulkan-drivers
test -f /usr/share/vulkan/icd.d/lvp_icd.json
dpkg-query -W -f='${Package} ${Version}\n' mesa-vulkan-drivers libvulkan1
