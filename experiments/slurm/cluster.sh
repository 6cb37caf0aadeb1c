#!/usr/bin/env bash
# A one-node Slurm cluster with accounting on this machine, for trying `hydra/launcher=slurm` on a
# workstation and for the `slurm`-marked tests. Debian/Ubuntu, run as root, no systemd or cgroups needed.
#
#   experiments/slurm/cluster.sh start    # install (once) and start munged, MariaDB, slurmdbd, slurmctld, slurmd
#   experiments/slurm/cluster.sh status   # the daemons it started and `sinfo`
#   experiments/slurm/cluster.sh stop     # stop exactly the processes `start` started (by their PIDs)
#
# The node is sized from the machine (`slurmd -C`: CPUs, memory). State, logs and PIDs live in
# $PRRESQ_SLURM_STATE (default /var/lib/prresq-slurm); /etc/slurm/slurm.conf and slurmdbd.conf are written
# only when absent or written by this script. `start` is idempotent: a running daemon is left alone.
set -euo pipefail

STATE=${PRRESQ_SLURM_STATE:-/var/lib/prresq-slurm}
CONF_DIR=/etc/slurm
MARK="# written by prresq experiments/slurm/cluster.sh"
PARTITION=${PRRESQ_SLURM_PARTITION:-debug}
DB_PASS=prresq-slurmdbd
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

say() { printf '[cluster.sh] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

pid_of() { [[ -s "$STATE/pids/$1" ]] && cat "$STATE/pids/$1" || true; }
alive() { local pid; pid=$(pid_of "$1"); [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; }

install_packages() {
    local missing=()
    for bin in slurmctld slurmd slurmdbd munged mariadbd sacct; do
        command -v "$bin" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
    done
    if ((${#missing[@]} == 0)); then
        return
    fi
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install Slurm, munge, slurmdbd and MariaDB yourself"
    say "installing slurm-wlm munge slurmdbd mariadb-server (missing: ${missing[*]})"
    local t0=$SECONDS
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge slurmdbd mariadb-server >/dev/null
    say "installed in $((SECONDS - t0)) s"
}

write_conf() {  # $1 file, $2 mode; content on stdin. Never replaces a configuration this script did not write.
    local file=$1 mode=$2 tmp
    if [[ -e "$file" ]] && ! grep -qF "$MARK" "$file"; then
        die "$file exists and was not written by this script: leaving the cluster it configures alone"
    fi
    tmp=$(mktemp "$file.XXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    mv "$tmp" "$file"
}

write_configs() {
    local host node
    host=$(hostname -s)
    node=$(PATH=$PATH:/usr/sbin slurmd -C | head -n1)   # NodeName=<host> CPUs=.. Boards=.. ... RealMemory=..
    [[ "$node" == NodeName=* ]] || die "slurmd -C printed no node line: $node"
    mkdir -p "$CONF_DIR" "$STATE"/{ctld,slurmd,log,pids}
    write_conf "$CONF_DIR/slurm.conf" 644 <<CONF
$MARK
ClusterName=prresq
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
# a requeued job may start again cred_expire s after its requeue (Slurm's default: 120)
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
# look at pending jobs every 2 s (defaults 60 s / 30 s): a requeued job starts again within seconds
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
MinJobAge=300
KillWait=10
$node State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    write_conf "$CONF_DIR/slurmdbd.conf" 600 <<CONF
$MARK
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
CONF
}

launch() {  # $1 name, rest: command run in the foreground of a background shell; its PID is recorded
    local name=$1
    shift
    if alive "$name"; then
        return
    fi
    nohup "$@" >>"$STATE/log/$name.out" 2>&1 &
    echo $! >"$STATE/pids/$name"
}

wait_for() {  # $1 daemon, $2 seconds, rest: a command that succeeds when it is ready
    local name=$1 limit=$2
    shift 2
    for ((i = 0; i < limit * 5; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        alive "$name" || die "$name exited: $(tail -n 3 "$STATE/log/$name.out" 2>/dev/null) (logs: $STATE/log)"
        sleep 0.2
    done
    die "$name did not become ready in ${limit} s (logs: $STATE/log)"
}

start() {
    [[ $EUID -eq 0 ]] || die "run as root (it installs packages and starts system daemons)"
    local t0=$SECONDS
    install_packages
    local t1=$SECONDS
    write_configs
    export PATH=$PATH:/usr/sbin

    install -d -o munge -g munge -m 0755 /run/munge
    [[ -s /etc/munge/munge.key ]] || { mungekey --create 2>/dev/null || create-munge-key; }
    launch munged runuser -u munge -- munged --foreground
    wait_for munged 10 munge -n

    install -d -o mysql -g mysql -m 0755 /run/mysqld
    launch mariadbd mariadbd --user=mysql --socket=/run/mysqld/mysqld.sock --pid-file=/run/mysqld/prresq-mariadbd.pid
    wait_for mariadbd 30 mariadb -e "SELECT 1"
    mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
                GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

    launch slurmdbd slurmdbd -D
    wait_for slurmdbd 30 sacctmgr -n list cluster
    sacctmgr -n list cluster format=cluster | grep -qw prresq || sacctmgr -i add cluster prresq >/dev/null

    launch slurmctld slurmctld -D -i
    wait_for slurmctld 30 scontrol ping
    launch slurmd slurmd -D
    wait_for slurmd 30 bash -c "sinfo -h -o %T | grep -qx idle"
    say "started in $((SECONDS - t0)) s (install check $((t1 - t0)) s); sinfo:"
    sinfo >&2
}

stop() {
    local name pid
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        name=${DAEMONS[i]}
        pid=$(pid_of "$name")
        [[ -n "$pid" ]] || continue
        if kill -0 "$pid" 2>/dev/null; then
            # runuser forwards the signal to munged; the others are the daemons themselves
            kill -TERM "$pid"
            for ((j = 0; j < 100 && $(kill -0 "$pid" 2>/dev/null && echo 1 || echo 0); j++)); do sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
            say "stopped $name (pid $pid)"
        fi
        rm -f "$STATE/pids/$name"
    done
}

status() {
    local name rc=0
    for name in "${DAEMONS[@]}"; do
        if alive "$name"; then echo "$name: running (pid $(pid_of "$name"))"; else echo "$name: not running"; rc=1; fi
    done
    command -v sinfo >/dev/null && sinfo 2>&1 || true
    return $rc
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 {start|stop|status}" >&2; exit 2 ;;
esac
