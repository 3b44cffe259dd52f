#!/bin/sh
# Mesa's lavapipe (software Vulkan, mesa-vulkan-drivers >= 25 from bookworm-backports) so that
# LiteRT's GPU accelerator runs on a machine without a GPU: its numbers are the GPU's
# arithmetic, its speed means nothing. bookworm's own Mesa 22.3 finds no adapter.
# Run as root on Debian 12; idempotent.
set -eu
cat > /etc/apt/sources.list.d/backports.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -t bookworm-backports mesa-vulkan-drivers
test -f /usr/share/vulkan/icd.d/lvp_icd.json
dpkg-query -W -f='${Package} ${Version}\n' mesa-vulkan-drivers libvulkan1
