#!/usr/bin/env bash
# archiso profile of the llmbasedos appliance image. Build on Arch Linux with:  mkarchiso -v -w /tmp/work -o out iso/
# shellcheck disable=SC2034  # mkarchiso sources this file and reads the variables.

iso_name="llmbasedos"
iso_label="LLMBASEDOS_$(date --date="@${SOURCE_DATE_EPOCH:-$(date +%s)}" +%Y%m)"
iso_publisher="llmbasedos"
iso_application="llmbasedos appliance"
iso_version="$(date --date="@${SOURCE_DATE_EPOCH:-$(date +%s)}" +%Y.%m.%d)"
install_dir="arch"
buildmodes=('iso')
bootmodes=('bios.syslinux.mbr' 'bios.syslinux.eltorito' 'uefi-x64.systemd-boot.esp' 'uefi-x64.systemd-boot.eltorito')
arch="x86_64"
pacman_conf="pacman.conf"
airootfs_image_type="squashfs"
airootfs_image_tool_options=('-comp' 'xz' '-Xbcj' 'x86' '-b' '1M' '-Xdict-size' '1M')
file_permissions=(
  ["/etc/shadow"]="0:0:400"
  ["/etc/llmbasedos"]="0:0:755"
  ["/usr/local/bin/llmbasedos-firstboot"]="0:0:755"
  ["/usr/local/bin/llmbasedos-postinstall"]="0:0:755"
)
