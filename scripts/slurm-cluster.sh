#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the tests of `ensemble.py --executor slurm` (CI starts it).
#
#   scripts/slurm-cluster.sh start      install Debian's packages when missing, write the configuration into
#                                       $SLURM_CLUSTER_DIR (default /tmp/tgs-slurm), start munged, MariaDB and
#                                       slurmdbd (accounting), slurmctld and slurmd; wait until the node is idle
#   scripts/slurm-cluster.sh stop       cancel the cluster's jobs, stop the daemons this script started (by pid)
#   scripts/slurm-cluster.sh status     exit 0 when the cluster answers (sinfo), else 1
#   scripts/slurm-cluster.sh configure [accounting=on|off] [user-signal=on|off]
#                                       rewrite slurm.conf and restart slurmctld only (running jobs are kept):
#                                       a cluster without accounting (no sacct), pre-emption with or without the
#                                       job's own signal (SlurmctldParameters=preempt_send_user_signal)
#
# Clients find the cluster with SLURM_CONF=$SLURM_CLUSTER_DIR/slurm.conf (printed by start). Needs root and apt
# (Debian 12: Slurm 22.05); there is no systemd: every daemon runs in the foreground in its own session, its pid
# kept in $SLURM_CLUSTER_DIR/pids. The node is `localhost` (127.0.0.1), two partitions: `low` (default, pre-empted
# by requeue, GraceTime 10 s) and `high` (pre-empts `low`). Accounting: slurmdbd on a private MariaDB reached
# through its socket only (--skip-networking). SLURM_ACCOUNTING=off start: a cluster without accounting.
set -euo pipefail

DIR=${SLURM_CLUSTER_DIR:-/tmp/tgs-slurm}
CONF=$DIR/slurm.conf
PIDS=$DIR/pids
CPUS=${SLURM_CLUSTER_CPUS:-8}  # job slots on the node (more than the cores: the test jobs are small)
PACKAGES=(slurmctld slurmd slurm-client slurm-wlm-basic-plugins munge)
ACCT_PACKAGES=(slurmdbd slurm-wlm-mysql-plugin mariadb-server)

say() { echo "slurm-cluster: $*" >&2; }
die() { say "$*"; exit 1; }

# -- packages ------------------------------------------------------------------------------------------------------
missing() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
    done
}

install_packages() {
    local want
    want=$(missing "$@")
    [ -z "$want" ] && return 0
    command -v apt-get >/dev/null || die "no apt-get: install $want yourself"
    [ "$(id -u)" = 0 ] || die "installing $want needs root"
    say "installing $(echo $want | tr '\n' ' ')(no service is started by apt)"
    local policy=/usr/sbin/policy-rc.d saved=""
    if [ -e $policy ]; then saved=$(mktemp); cp -p $policy "$saved"; fi
    printf '#!/bin/sh\nexit 101\n' >$policy && chmod 755 $policy
    # shellcheck disable=SC2064
    trap "restore_policy '$saved'" EXIT
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $want >/dev/null
    restore_policy "$saved"
    trap - EXIT
}

restore_policy() {
    if [ -n "$1" ]; then mv -f "$1" /usr/sbin/policy-rc.d; else rm -f /usr/sbin/policy-rc.d; fi
}

# -- daemons -------------------------------------------------------------------------------------------------------
# run NAME CMD...: CMD in the foreground of its own session, its output in log/NAME.log, its pid in pids/NAME
run() {
    local name=$1; shift
    setsid "$@" >>"$DIR/log/$name.log" 2>&1 < /dev/null &
    echo $! >"$PIDS/$name"
}

# alive NAME: its process exists and is not a zombie (a stopped daemon stays one until it is reaped)
alive() {
    local pid state
    [ -s "$PIDS/$1" ] || return 1
    pid=$(cat "$PIDS/$1")
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# ours NAME: the pid in pids/NAME is still the program this script started there (not a reused pid); its
# command name, as started (Debian's slurmd is slurmd-wlm behind a link)
ours() {
    local comm
    comm=$(cat "/proc/$(cat "$PIDS/$1")/comm" 2>/dev/null) || return 1
    case $1 in
        mariadb) [[ $comm == mariadbd || $comm == mysqld ]] ;;
        *) [[ $comm == "$1" ]] ;;
    esac
}

halt() {  # halt NAME: SIGTERM, then SIGKILL after 20 s, to the daemon this script started
    local name=$1 i
    [ -s "$PIDS/$name" ] || return 0
    if alive "$name" && ours "$name"; then
        kill -TERM "$(cat "$PIDS/$name")" 2>/dev/null || true
        for i in $(seq 200); do alive "$name" || break; sleep 0.1; done
        if alive "$name"; then kill -KILL "$(cat "$PIDS/$name")" 2>/dev/null || true; fi
    fi
    rm -f "$PIDS/$name"
}

wait_for() {  # wait_for SECONDS WHAT CMD...: until CMD succeeds
    local seconds=$1 what=$2 i; shift 2
    for i in $(seq $((seconds * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    die "$what did not come up within $seconds s (logs in $DIR/log)"
}

# -- configuration -------------------------------------------------------------------------------------------------
write_slurm_conf() {  # write_slurm_conf ACCOUNTING(on|off) USER_SIGNAL(on|off)
    local acct=accounting_storage/none params=""
    [ "$1" = on ] && acct=accounting_storage/slurmdbd
    [ "$2" = on ] && params="SlurmctldParameters=preempt_send_user_signal"
    cat >"$CONF.new" <<EOF
# written by scripts/slurm-cluster.sh (accounting=$1 user-signal=$2)
ClusterName=tgs
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/state/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.daemon.log
SlurmdLogFile=$DIR/log/slurmd.daemon.log
ProctrackType=proctrack/pgid
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
KillWait=5
SchedulerParameters=sched_interval=2,bf_interval=2
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
$params
AccountingStorageType=$acct
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStoragePass=$DIR/munge/munge.socket
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=low Nodes=localhost Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=10 PreemptMode=REQUEUE
PartitionName=high Nodes=localhost MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
EOF
    mv -f "$CONF.new" "$CONF"
}

write_slurmdbd_conf() {
    cat >"$DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.daemon.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/slurmdbd.conf"
}

setting() {  # setting KEY: on/off as the current slurm.conf says
    case $1 in
        accounting) grep -q '^AccountingStorageType=accounting_storage/slurmdbd' "$CONF" && echo on || echo off ;;
        user-signal) grep -q '^SlurmctldParameters=preempt_send_user_signal' "$CONF" && echo on || echo off ;;
    esac
}

# -- commands ------------------------------------------------------------------------------------------------------
node_idle() { [ "$(SLURM_CONF=$CONF sinfo -h -N -n localhost -o %t 2>/dev/null | sort -u)" = idle ]; }

start_mariadb() {
    local db=$DIR/mysql
    if [ ! -d "$db/mysql" ]; then
        mkdir -p "$db"
        mariadb-install-db --no-defaults --datadir="$db" --user=root --auth-root-authentication-method=socket \
            >>"$DIR/log/mariadb.log" 2>&1 || die "mariadb-install-db failed (see $DIR/log/mariadb.log)"
    fi
    run mariadb "$(command -v mariadbd || command -v mysqld)" --no-defaults --datadir="$db" --user=root \
        --socket="$DIR/run/mysql.sock" --pid-file="$DIR/run/mariadb.pid" --skip-networking --skip-log-bin \
        --innodb-buffer-pool-size=32M --log-error="$DIR/log/mariadb.daemon.log"
    wait_for 60 MariaDB mariadb --no-defaults --socket="$DIR/run/mysql.sock" -u root -e "select 1"
}

start_slurmctld() {
    run slurmctld slurmctld -D -f "$CONF"
    wait_for 60 slurmctld env SLURM_CONF="$CONF" scontrol ping
}

start() {
    [ "$(id -u)" = 0 ] || die "needs root (the daemons run as root here)"
    local acct=${SLURM_ACCOUNTING:-on}
    install_packages "${PACKAGES[@]}"
    [ "$acct" = on ] && install_packages "${ACCT_PACKAGES[@]}"
    if [ -f "$CONF" ] && SLURM_CONF=$CONF timeout 5 sinfo >/dev/null 2>&1; then
        say "already running ($CONF)"; echo "SLURM_CONF=$CONF"; return 0
    fi
    mkdir -p "$DIR" && chmod 711 "$DIR"
    mkdir -p "$PIDS" "$DIR/log" "$DIR/run" "$DIR/munge" "$DIR/state/ctld" "$DIR/state/d"
    [ -f "$DIR/munge/munge.key" ] || mungekey --create --keyfile="$DIR/munge/munge.key" 2>/dev/null \
        || dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    chmod 600 "$DIR/munge/munge.key"
    run munged munged -F --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.daemon.log" --seed-file="$DIR/munge/seed"
    wait_for 20 munged test -S "$DIR/munge/munge.socket"
    write_slurm_conf "$acct" "${SLURM_USER_SIGNAL:-on}"
    if [ "$acct" = on ]; then
        start_mariadb
        write_slurmdbd_conf
        SLURM_CONF=$CONF MYSQL_UNIX_PORT=$DIR/run/mysql.sock run slurmdbd slurmdbd -D  # reads $DIR/slurmdbd.conf
        wait_for 60 slurmdbd bash -c "exec 3<>/dev/tcp/127.0.0.1/6819"
    fi
    start_slurmctld
    run slurmd slurmd -D -N localhost -f "$CONF"
    wait_for 90 "the node (sinfo: idle)" node_idle
    say "up: Slurm $(SLURM_CONF=$CONF sinfo -V | awk '{print $2}'), accounting $acct; export SLURM_CONF=$CONF"
    echo "SLURM_CONF=$CONF"
}

configure() {
    [ -f "$CONF" ] || die "not started ($CONF missing)"
    local acct user arg
    acct=$(setting accounting); user=$(setting user-signal)
    for arg in "$@"; do
        case $arg in
            accounting=on|accounting=off) acct=${arg#*=} ;;
            user-signal=on|user-signal=off) user=${arg#*=} ;;
            *) die "configure: $arg is not accounting=on|off or user-signal=on|off" ;;
        esac
    done
    [ "$acct" = on ] && ! alive slurmdbd && die "configure: accounting=on needs a cluster started with accounting"
    [ "$acct" = "$(setting accounting)" ] && [ "$user" = "$(setting user-signal)" ] && return 0
    write_slurm_conf "$acct" "$user"
    halt slurmctld
    start_slurmctld
    wait_for 60 "the node (sinfo)" env SLURM_CONF="$CONF" sinfo -h -N -n localhost
    say "slurmctld restarted: accounting $acct, user signal on pre-emption $user"
}

stop() {
    [ -d "$PIDS" ] || { say "nothing to stop ($PIDS missing)"; return 0; }
    if alive slurmctld; then  # the cluster's own jobs first: their processes belong to slurmd's steps
        SLURM_CONF=$CONF scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
        for _ in $(seq 100); do
            [ -z "$(SLURM_CONF=$CONF squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2
        done
    fi
    local name
    for name in slurmd slurmctld slurmdbd mariadb munged; do halt "$name"; done
    say "stopped"
}

status() {
    [ -f "$CONF" ] && SLURM_CONF=$CONF timeout 10 sinfo -h -N -o "%N %t" && return 0
    say "not running"; return 1
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    configure) shift; configure "$@" ;;
    *) echo "usage: $0 start|stop|status|configure [accounting=on|off] [user-signal=on|off]" >&2; exit 2 ;;
esac
