#!/bin/busybox sh
# init.sh - PID 1 of the stas test VM (see runner.py), in two stages:
#   stage 1 (no argument): /init of the initramfs, under busybox. Loads the 9p/overlay
#     modules, mounts the host's / read-only (9p tag "hostroot") under a tmpfs overlay and
#     switches to it, re-running this same file from the host tree as stage 2.
#   stage 2: on the overlay root, under the host's /bin/sh. Mounts the pseudo file systems
#     and the job directory (9p tag "stasjob"), makes the guest kernel's modules visible at
#     /lib/modules/$(uname -r), loads $STAS_VM_MODULES, brings lo up, runs job.sh with a
#     clean environment, records its exit status in $JOB/rc and powers off.
# STAS_VM_INIT (this file's host path) arrives from the kernel command line as environment.

JOB=/run/stas-vm
P9="trans=virtio,version=9p2000.L,msize=512000"

say() { echo "stas-vm: $*" >/dev/console; }
halt() {
	sync
	busybox poweroff -f 2>/dev/null || echo o >/proc/sysrq-trigger
	sleep 5
}
die() { say "FAILED: $*"; halt; }

stage1() {
	/bin/busybox --install -s /bin
	export PATH=/bin
	for m in /modules/*.ko; do
		insmod "$m" || say "insmod $m failed"
	done
	mount -t 9p -o "ro,cache=loose,$P9" hostroot /lower || die "cannot mount the host root"
	mount -t tmpfs -o mode=0755 tmpfs /rw && mkdir /rw/upper /rw/work
	mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot ||
		die "cannot mount the overlay root"
	[ -r "/newroot$STAS_VM_INIT" ] || die "no stage 2 script at '$STAS_VM_INIT'"
	exec switch_root /newroot /bin/sh "$STAS_VM_INIT" stage2
}

stage2() {
	export PATH=/usr/sbin:/usr/bin:/sbin:/bin
	mount -t proc proc /proc
	mount -t sysfs sysfs /sys
	mount -t devtmpfs devtmpfs /dev
	mkdir -p /dev/pts /dev/shm
	mount -t devpts devpts /dev/pts
	mount -t tmpfs shm /dev/shm
	mount -t tmpfs -o mode=0755 run /run
	mkdir -p $JOB
	mount -t 9p -o "cache=none,$P9" stasjob $JOB || die "cannot mount the job directory"
	. $JOB/vm.env
	while read -r tag path; do # read-write host directories, at the same path
		mkdir -p "$path" && mount -t 9p -o "cache=loose,$P9" "$tag" "$path" ||
			say "cannot mount $tag at $path"
	done <$JOB/shares
	kver=$(uname -r)
	mkdir -p "/lib/modules/$kver"
	mount --bind "$STAS_VM_MODDIR" "/lib/modules/$kver" || die "no modules at $STAS_VM_MODDIR"
	# shellcheck disable=SC2086 # a word list
	modprobe -a $STAS_VM_MODULES || say "modprobe $STAS_VM_MODULES failed"
	grep -q ' /sys/kernel/config ' /proc/mounts ||
		mount -t configfs configfs /sys/kernel/config 2>/dev/null
	ip link set lo up
	hostname stas-vm
	say "ready at $(cut -d' ' -f1 /proc/uptime)s"
	(cd / && exec env -i /bin/sh $JOB/job.sh) </dev/null >$JOB/out 2>&1
	echo $? >$JOB/rc
	say "done at $(cut -d' ' -f1 /proc/uptime)s, rc=$(cat $JOB/rc)"
	halt
}

case "${1:-stage1}" in
stage1) stage1 ;;
stage2) stage2 ;;
*) die "unknown stage '$1'" ;;
esac
