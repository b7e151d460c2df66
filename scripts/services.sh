#!/usr/bin/env bash
# Real test servers for the driver tests: 5 Redis nodes, a 3-member etcd
# cluster, a 3-server ZooKeeper ensemble and a PostgreSQL cluster, all on
# 127.0.0.1 with fixed, unusual ports so they never clash with a developer's
# own servers.
#
#   scripts/services.sh up [SERVICE...]      install what is missing, start, wait, write $DIR/env
#   scripts/services.sh status [SERVICE...]  print the status table (exit 1 if something is down)
#   scripts/services.sh down [SERVICE...]    stop what `up` started and remove its data
#
# SERVICE is redis, etcd, zookeeper or postgres; none means all of them.
# State lives in ${DLOCK_SERVICES_DIR:-/tmp/dlock-services}: bin/ data/ logs/ pids/ zk/ pgsock/ env
#
# PostgreSQL: Debian's server binaries (package postgresql), a cluster of our
# own made by initdb in $DATA/pg, listening on 127.0.0.1:${DLOCK_PG_PORT:-15432}
# (never 5432) with trust authentication on loopback, run as the unprivileged
# user postgres when the script runs as root (initdb and postgres refuse root).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${DLOCK_SERVICES_DIR:-/tmp/dlock-services}"
BIN="$DIR/bin"
DATA="$DIR/data"
LOGS="$DIR/logs"
PIDS="$DIR/pids"
ZKCONF="$DIR/zk"
WAIT_SECS="${DLOCK_SERVICES_TIMEOUT:-60}"

ETCD_VERSION="3.7.3"
HOST="127.0.0.1"

REDIS_PORTS=(16371 16372 16373 16374 16375)
ETCD_NAMES=(e1 e2 e3)
ETCD_CLIENT_PORTS=(12379 12479 12579)
ETCD_PEER_PORTS=(12380 12480 12580)
ZK_IDS=(1 2 3)
ZK_CLIENT_PORTS=(12181 12182 12183)
ZK_QUORUM_PORTS=(12888 12889 12890)
ZK_ELECTION_PORTS=(13888 13889 13890)
PG_PORT="${DLOCK_PG_PORT:-15432}"
PG_DB="postgres"
PG_SOCK="$DIR/pgsock"

ALL_SERVICES=(redis etcd zookeeper postgres)
SERVICES=()

JAVA="${JAVA:-$(command -v java || echo /usr/bin/java)}"

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- helpers

pid_of() { # name -> pid from pidfile, only if that pid is still one of ours (or empty)
	local f="$PIDS/$1.pid" pid
	[[ -s $f ]] || return 0
	pid=$(<"$f")
	# guard against pid reuse: the command line must be one of our servers
	if [[ -r /proc/$pid/cmdline ]] &&
		tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qE -- "$DIR|redis-server"; then
		printf '%s' "$pid"
	fi
}

pid_alive() { # pid
	[[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null
}

port_open() { # port
	(exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

port_listening() { # port: something (anyone) listens on 127.0.0.1:port or *:port
	ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

# send a short text command, print the reply (used for redis PING and ZK 4lw)
tcp_cmd() { # port payload
	local port=$1 payload=$2 reply=""
	reply=$(timeout 3 bash -c '
		exec 3<>"/dev/tcp/$0/$1" || exit 1
		printf "%b" "$2" >&3
		cat <&3' "$HOST" "$port" "$payload" 2>/dev/null) || true
	printf '%s' "$reply"
}

redis_ping() { # port
	local r
	if command -v redis-cli >/dev/null 2>&1; then
		r=$(timeout 3 redis-cli -h "$HOST" -p "$1" ping 2>/dev/null || true)
	else
		r=$(timeout 3 bash -c '
			exec 3<>"/dev/tcp/$0/$1" || exit 1
			printf "PING\r\n" >&3
			read -r line <&3; printf "%s" "$line"' "$HOST" "$1" 2>/dev/null || true)
	fi
	[[ $r == *PONG* ]]
}

etcd_healthy() { # client port
	[[ -x $BIN/etcdctl ]] || return 1
	ETCDCTL_API=3 timeout 5 "$BIN/etcdctl" --endpoints="http://$HOST:$1" \
		--command-timeout=2s endpoint health >/dev/null 2>&1
}

zk_ok() { # client port
	[[ $(tcp_cmd "$1" ruok) == imok ]]
}

zk_mode() { # client port -> leader|follower|standalone|""
	tcp_cmd "$1" srvr | sed -n 's/^Mode: *//p' | tr -d '\r'
}

start_bg() { # name logfile cmd... : start detached, record pid
	local name=$1 logf=$2
	shift 2
	# setsid: own session, so a Ctrl-C in the calling terminal does not hit it.
	# Not a process group leader here, so setsid execs in place and $! is the server pid.
	nohup setsid "$@" >"$logf" 2>&1 </dev/null &
	echo $! >"$PIDS/$name.pid"
}

stop_pid() { # name
	local name=$1 pid
	pid=$(pid_of "$name")
	if pid_alive "$pid"; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 1 50); do
			pid_alive "$pid" || break
			sleep 0.1
		done
		if pid_alive "$pid"; then
			log "$name (pid $pid) ignored SIGTERM, sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			sleep 0.2
		fi
	fi
	rm -f "$PIDS/$name.pid"
}

fail_with_log() { # what logfile
	printf '[services] ERROR: %s did not come up within %ss; last lines of %s:\n' "$1" "$WAIT_SECS" "$2" >&2
	tail -n 30 "$2" >&2 2>/dev/null || true
	exit 1
}

# ---------------------------------------------------------------- install

redis_bin() { command -v redis-server 2>/dev/null || echo /usr/bin/redis-server; }

zk_classpath() {
	# Debian's zookeeper.jar (3.8.x) carries a manifest Class-Path naming its
	# dependency jars in /usr/share/java. Debian logs through slf4j -> log4j 1.2,
	# whose binding is not in that manifest, so add it; plus any jars listed in
	# the CLASSPATH of Debian's /etc/zookeeper/conf/environment.
	local out=() entry cp=""
	for entry in zookeeper.jar zookeeper-jute.jar slf4j-log4j12.jar log4j-1.2.jar; do
		[[ -e /usr/share/java/$entry ]] && out+=("/usr/share/java/$entry")
	done
	if [[ -r /etc/zookeeper/conf/environment ]]; then
		cp=$(bash -c '. "$1" >/dev/null 2>&1; printf "%s" "${CLASSPATH:-}"' _ /etc/zookeeper/conf/environment) || cp=""
	fi
	local entries=()
	IFS=: read -r -a entries <<<"$cp"
	for entry in "${entries[@]}"; do
		[[ $entry == *.jar && -e $entry && " ${out[*]} " != *" $entry "* ]] && out+=("$entry")
	done
	local IFS=:
	printf '%s' "${out[*]}"
}

etcd_version_ok() {
	[[ -x $BIN/etcd && -x $BIN/etcdctl ]] &&
		"$BIN/etcd" --version 2>/dev/null | grep -q "etcd Version: $ETCD_VERSION\$" &&
		"$BIN/etcdctl" version 2>/dev/null | grep -q "etcdctl version: $ETCD_VERSION\$"
}

install_debs() {
	local missing=()
	if wanted redis; then
		command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
		command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
	fi
	if wanted zookeeper; then
		[[ -e /usr/share/java/zookeeper.jar ]] || missing+=(zookeeper)
		[[ -x $JAVA ]] || missing+=(default-jre-headless)
	fi
	# ip(8), for the partition tests' network namespaces (internal/testserver/netns.go).
	command -v ip >/dev/null 2>&1 || [[ -x /usr/sbin/ip || -x /sbin/ip ]] || missing+=(iproute2)
	if wanted postgres; then
		[[ -n $(pg_bindir) ]] || missing+=(postgresql)
		# pglock's test of PgBouncer in front of the server.
		[[ -n $(pgbouncer_bin) ]] || missing+=(pgbouncer)
	fi
	((${#missing[@]} == 0)) && return 0

	log "installing Debian packages: ${missing[*]}"
	local sudo=""
	[[ $(id -u) -eq 0 ]] || sudo="sudo"
	# Keep the packages' own system services from starting on 6379/2181/5432
	# (Debian's postgresql would otherwise create and start a cluster).
	local policy=/usr/sbin/policy-rc.d made_policy=0
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
		$sudo chmod +x "$policy"
		made_policy=1
	fi
	local rc=0
	{
		$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
			$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
				-o Dpkg::Use-Pty=0 "${missing[@]}"
	} >"$LOGS/apt.log" 2>&1 || rc=$?
	((made_policy)) && $sudo rm -f "$policy"
	if ((rc != 0)); then
		tail -n 30 "$LOGS/apt.log" >&2
		die "apt-get install failed (full log: $LOGS/apt.log)"
	fi
	# Belt and braces: if a system service got started anyway, stop and disable it.
	local svc
	for svc in redis-server zookeeper postgresql pgbouncer; do
		if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
			$sudo systemctl disable --now "$svc" >/dev/null 2>&1 || true
		fi
		if command -v service >/dev/null 2>&1; then
			$sudo service "$svc" stop >/dev/null 2>&1 || true
		fi
	done
	if port_listening 6379 || port_listening 2181; then
		log "warning: something still listens on 6379 or 2181 (not ours; our ports are 163xx/12xxx):"
		ss -ltnp 2>/dev/null | grep -E ':(6379|2181)\b' >&2 || true
	fi
}

build_etcd() {
	etcd_version_ok && return 0
	command -v go >/dev/null 2>&1 || die "go is needed to build etcd $ETCD_VERSION"
	log "building etcd $ETCD_VERSION and etcdctl from scripts/tools/etcd (first time only)"
	(
		cd "$ROOT/scripts/tools/etcd"
		export GOFLAGS=-mod=readonly GOWORK=off
		go build -trimpath -o "$BIN/etcd" go.etcd.io/etcd/server/v3
		go build -trimpath -o "$BIN/etcdctl" go.etcd.io/etcd/etcdctl/v3
	) >"$LOGS/etcd-build.log" 2>&1 || {
		tail -n 30 "$LOGS/etcd-build.log" >&2
		die "building etcd failed (full log: $LOGS/etcd-build.log)"
	}
	etcd_version_ok || die "built etcd does not report version $ETCD_VERSION"
}

# ---------------------------------------------------------------- members

# ready check per kind
member_ready() { # kind port
	case $1 in
	redis) redis_ping "$2" ;;
	etcd) etcd_healthy "$2" ;;
	zk) zk_ok "$2" ;;
	pg) pg_ready "$2" ;;
	esac
}

# Is a member of ours up? pid alive and port answering.
member_up() { # kind name port
	pid_alive "$(pid_of "$2")" && member_ready "$1" "$3"
}

# Refuse to start on a port someone else holds.
check_port_free() { # name port
	if port_listening "$2"; then
		ss -ltnp "sport = :$2" >&2 2>/dev/null || true
		die "port $2 needed by $1 is in use by a process this script did not start"
	fi
}

start_redis() {
	local i port name
	for i in "${!REDIS_PORTS[@]}"; do
		port=${REDIS_PORTS[$i]}
		name="redis$((i + 1))"
		pid_alive "$(pid_of "$name")" && continue
		check_port_free "$name" "$port"
		mkdir -p "$DATA/$name"
		start_bg "$name" "$LOGS/$name.log" "$(redis_bin)" \
			--port "$port" --bind "$HOST" --protected-mode no \
			--save '' --appendonly no --daemonize no \
			--dir "$DATA/$name" --logfile ''
	done
}

etcd_initial_cluster() {
	local i s=""
	for i in "${!ETCD_NAMES[@]}"; do
		s+="${s:+,}${ETCD_NAMES[$i]}=http://$HOST:${ETCD_PEER_PORTS[$i]}"
	done
	printf '%s' "$s"
}

start_etcd() {
	local i name any=0
	for name in "${ETCD_NAMES[@]}"; do
		pid_alive "$(pid_of "etcd-$name")" && any=1
	done
	# No member of ours alive: start a brand-new cluster from empty data dirs.
	((any)) || rm -rf "$DATA/etcd"
	for i in "${!ETCD_NAMES[@]}"; do
		name=${ETCD_NAMES[$i]}
		pid_alive "$(pid_of "etcd-$name")" && continue
		check_port_free "etcd-$name" "${ETCD_CLIENT_PORTS[$i]}"
		check_port_free "etcd-$name" "${ETCD_PEER_PORTS[$i]}"
		mkdir -p "$DATA/etcd"
		start_bg "etcd-$name" "$LOGS/etcd-$name.log" "$BIN/etcd" \
			--name "$name" \
			--data-dir "$DATA/etcd/$name" \
			--listen-client-urls "http://$HOST:${ETCD_CLIENT_PORTS[$i]}" \
			--advertise-client-urls "http://$HOST:${ETCD_CLIENT_PORTS[$i]}" \
			--listen-peer-urls "http://$HOST:${ETCD_PEER_PORTS[$i]}" \
			--initial-advertise-peer-urls "http://$HOST:${ETCD_PEER_PORTS[$i]}" \
			--initial-cluster "$(etcd_initial_cluster)" \
			--initial-cluster-token dlock-test \
			--initial-cluster-state new \
			--heartbeat-interval 100 --election-timeout 1000 \
			--log-level warn
	done
}

write_zk_conf() { # id idx
	local id=$1 idx=$2 j conf="$ZKCONF/$1/zoo.cfg"
	mkdir -p "$ZKCONF/$id" "$DATA/zk/$id"
	printf '%s\n' "$id" >"$DATA/zk/$id/myid"
	{
		echo "tickTime=500"
		echo "initLimit=10"
		echo "syncLimit=5"
		echo "dataDir=$DATA/zk/$id"
		echo "clientPort=${ZK_CLIENT_PORTS[$idx]}"
		echo "clientPortAddress=$HOST"
		echo "maxClientCnxns=0"
		echo "admin.enableServer=false"
		echo "4lw.commands.whitelist=ruok,srvr,stat,mntr"
		echo "autopurge.purgeInterval=0"
		for j in "${!ZK_IDS[@]}"; do
			echo "server.${ZK_IDS[$j]}=$HOST:${ZK_QUORUM_PORTS[$j]}:${ZK_ELECTION_PORTS[$j]}"
		done
	} >"$conf"
}

start_zk() {
	local i id any=0 cp
	cp=$(zk_classpath)
	for id in "${ZK_IDS[@]}"; do
		pid_alive "$(pid_of "zk$id")" && any=1
	done
	((any)) || rm -rf "$DATA/zk"
	for i in "${!ZK_IDS[@]}"; do
		id=${ZK_IDS[$i]}
		pid_alive "$(pid_of "zk$id")" && continue
		check_port_free "zk$id" "${ZK_CLIENT_PORTS[$i]}"
		check_port_free "zk$id" "${ZK_QUORUM_PORTS[$i]}"
		check_port_free "zk$id" "${ZK_ELECTION_PORTS[$i]}"
		write_zk_conf "$id" "$i"
		start_bg "zk$id" "$LOGS/zk$id.log" "$JAVA" -Xmx256m -Xms32m -XX:+UseSerialGC \
			-XX:TieredStopAtLevel=1 \
			-cp "$ZKCONF/$id:$cp" \
			-Dzookeeper.log.dir="$LOGS" \
			-Dzookeeper.log.file="zk$id.log" \
			-Dzookeeper.root.logger=INFO,CONSOLE \
			-Dlog4j.configuration="file:$ZKCONF/log4j.properties" \
			-Dlogback.configurationFile="$ZKCONF/logback.xml" \
			org.apache.zookeeper.server.quorum.QuorumPeerMain "$ZKCONF/$id/zoo.cfg"
	done
}

write_zk_logging() {
	mkdir -p "$ZKCONF"
	cat >"$ZKCONF/log4j.properties" <<'EOF'
log4j.rootLogger=INFO, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} [myid:%X{myid}] - %-5p [%t:%C{1}@%L] - %m%n
EOF
	cat >"$ZKCONF/logback.xml" <<'EOF'
<configuration>
  <appender name="CONSOLE" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%d{ISO8601} [myid:%X{myid}] - %-5p [%t:%C{1}@%L] - %m%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="CONSOLE"/></root>
</configuration>
EOF
}

# ---------------------------------------------------------------- postgres

# Debian's server binaries: the newest /usr/lib/postgresql/N/bin, else the
# directory of an initdb on PATH (Debian does not put it there). Empty if none.
pg_bindir() {
	local d
	d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
	if [[ -n $d && -x $d/initdb && -x $d/postgres ]]; then
		printf '%s' "$d"
		return 0
	fi
	d=$(command -v initdb 2>/dev/null) || return 0
	d=$(dirname "$(readlink -f "$d")")
	[[ -x $d/postgres ]] && printf '%s' "$d"
	return 0
}

# The user the cluster runs as: postgres when we are root (initdb and
# postgres refuse to run as root), else whoever runs the script.
pg_user() {
	if [[ $(id -u) -eq 0 ]]; then
		printf postgres
	else
		id -un
	fi
}

# pg_as cmd...: run cmd as pg_user. setpriv execs in place, so start_bg
# records the server's own pid.
pg_as() {
	if [[ $(id -u) -eq 0 ]]; then
		setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
	else
		"$@"
	fi
}

pgbouncer_bin() { command -v pgbouncer 2>/dev/null || { [[ -x /usr/sbin/pgbouncer ]] && echo /usr/sbin/pgbouncer; } || true; }

pg_url() { printf 'postgres://%s@%s:%s/%s?sslmode=disable' "$(pg_user)" "$HOST" "$PG_PORT" "$PG_DB"; }

pg_ready() { # port
	local bin
	bin=$(pg_bindir)
	[[ -n $bin ]] && timeout 5 "$bin/pg_isready" -q -h "$HOST" -p "$1" -d "$PG_DB" -t 2 >/dev/null 2>&1
}

start_pg() {
	local bin data="$DATA/pg" user
	bin=$(pg_bindir)
	[[ -n $bin ]] || die "PostgreSQL server binaries not found (install Debian's postgresql)"
	pid_alive "$(pid_of pg)" && return 0
	check_port_free pg "$PG_PORT"
	user=$(pg_user)
	if [[ $(id -u) -eq 0 ]]; then
		getent passwd "$user" >/dev/null ||
			die "user $user does not exist (Debian's postgresql package creates it)"
	fi
	mkdir -p "$DATA" "$PG_SOCK"
	chmod 755 "$DIR" "$DATA"
	touch "$LOGS/pg.log"
	[[ $(id -u) -eq 0 ]] && chown "$user" "$PG_SOCK" "$LOGS/pg.log"
	# A cluster left by an earlier `up` (the server died) is started again
	# with its data: the fencing counters survive, as they would in production.
	[[ -s $data/PG_VERSION ]] || init_pg "$bin" "$data" "$user"
	local deadline=$((SECONDS + WAIT_SECS)) pid
	while :; do
		if [[ $(id -u) -eq 0 ]]; then
			start_bg pg "$LOGS/pg.log" setpriv --reuid="$user" --regid="$user" --init-groups -- \
				"$bin/postgres" -D "$data"
		else
			start_bg pg "$LOGS/pg.log" "$bin/postgres" -D "$data"
		fi
		pid=$(pid_of pg)
		until pg_ready "$PG_PORT" || ! pid_alive "$pid" || ((SECONDS >= deadline)); do sleep 0.1; done
		pid_alive "$pid" && return 0
		# After a kill -9 of the server its children linger for a moment,
		# attached to the old shared memory, and postgres refuses to start
		# beside them ("another postmaster", "pre-existing shared memory
		# block ... is still in use"): wait for them to go.
		tail -n 5 "$LOGS/pg.log" | grep -qE 'another postmaster|is still in use' && ((SECONDS < deadline)) || return 0
		sleep 0.5
	done
}

init_pg() { # bindir datadir user
	local bin=$1 data=$2 user=$3
	rm -rf "$data"
	mkdir -p "$data"
	chmod 700 "$data"
	[[ $(id -u) -eq 0 ]] && chown "$user" "$data"
	pg_as "$bin/initdb" -D "$data" -U "$user" --auth-local=trust --auth-host=trust \
		--encoding=UTF8 --locale=C.UTF-8 --no-instructions >"$LOGS/pg-initdb.log" 2>&1 || {
		tail -n 30 "$LOGS/pg-initdb.log" >&2
		die "initdb failed (full log: $LOGS/pg-initdb.log)"
	}
	# Tests open many connections (a pool per client, a connection per
	# waiter). fsync=off only matters if the machine itself crashes.
	cat >>"$data/postgresql.conf" <<EOF
# added by scripts/services.sh
listen_addresses = '$HOST'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
max_connections = 400
fsync = off
full_page_writes = off
shared_buffers = 32MB
EOF
}

# Stop the cluster with a fast shutdown (SIGINT: clients are cut off at
# once; SIGTERM, which stop_pid sends, waits for them to leave).
stop_pg() {
	local pid
	pid=$(pid_of pg)
	if pid_alive "$pid"; then
		kill -INT "$pid" 2>/dev/null || true
		for _ in $(seq 1 100); do
			pid_alive "$pid" || break
			sleep 0.1
		done
	fi
	stop_pid pg
	rm -rf "$DATA/pg" "$PG_SOCK"
}

# ---------------------------------------------------------------- waiting

wait_for() { # description logfile pid-name command...
	local what=$1 logf=$2 name=$3 deadline=$((SECONDS + WAIT_SECS))
	shift 3
	until "$@"; do
		if ! pid_alive "$(pid_of "$name")"; then
			printf '[services] ERROR: %s exited; last lines of %s:\n' "$what" "$logf" >&2
			tail -n 30 "$logf" >&2 2>/dev/null || true
			exit 1
		fi
		((SECONDS < deadline)) || fail_with_log "$what" "$logf"
		sleep 0.1
	done
}

zk_has_mode() { # port
	local m
	m=$(zk_mode "$1")
	[[ $m == leader || $m == follower ]]
}

wait_all() {
	local i
	if wanted postgres; then
		wait_for "postgres ($HOST:$PG_PORT)" "$LOGS/pg.log" pg pg_ready "$PG_PORT"
	fi
	wanted redis && for i in "${!REDIS_PORTS[@]}"; do
		wait_for "redis$((i + 1)) ($HOST:${REDIS_PORTS[$i]})" "$LOGS/redis$((i + 1)).log" "redis$((i + 1))" \
			redis_ping "${REDIS_PORTS[$i]}"
	done
	wanted etcd && for i in "${!ETCD_NAMES[@]}"; do
		wait_for "etcd ${ETCD_NAMES[$i]} ($HOST:${ETCD_CLIENT_PORTS[$i]})" "$LOGS/etcd-${ETCD_NAMES[$i]}.log" \
			"etcd-${ETCD_NAMES[$i]}" etcd_healthy "${ETCD_CLIENT_PORTS[$i]}"
	done
	wanted zookeeper && for i in "${!ZK_IDS[@]}"; do
		wait_for "zookeeper ${ZK_IDS[$i]} ($HOST:${ZK_CLIENT_PORTS[$i]})" "$LOGS/zk${ZK_IDS[$i]}.log" \
			"zk${ZK_IDS[$i]}" zk_has_mode "${ZK_CLIENT_PORTS[$i]}"
	done
	return 0
}

# ---------------------------------------------------------------- env + status

join_addrs() { # ports...
	local p s=""
	for p in "$@"; do s+="${s:+,}$HOST:$p"; done
	printf '%s' "$s"
}

write_env() {
	local tmp="$DIR/env.tmp"
	{
		echo "# written by scripts/services.sh up; source it: . $DIR/env"
		echo "export DLOCK_SERVICES_DIR=\"$DIR\""
		echo "export DLOCK_TEST_REDIS=\"$(join_addrs "${REDIS_PORTS[@]}")\""
		echo "export DLOCK_TEST_ETCD=\"$(join_addrs "${ETCD_CLIENT_PORTS[@]}")\""
		echo "export DLOCK_TEST_ZK=\"$(join_addrs "${ZK_CLIENT_PORTS[@]}")\""
		echo "export DLOCK_REDIS_BIN=\"$(redis_bin)\""
		echo "export DLOCK_ETCD_BIN=\"$BIN/etcd\""
		echo "export DLOCK_ETCDCTL_BIN=\"$BIN/etcdctl\""
		echo "export DLOCK_ZK_CLASSPATH=\"$(zk_classpath)\""
		echo "export JAVA=\"$JAVA\""
		echo "export DLOCK_TEST_PG=\"$(pg_url)\""
		echo "export DLOCK_PG_BINDIR=\"$(pg_bindir)\""
		echo "export DLOCK_PGBOUNCER_BIN=\"$(pgbouncer_bin)\""
	} >"$tmp"
	mv "$tmp" "$DIR/env"
}

# prints the table; returns 1 if anything is down
status_table() {
	local down=0 i name pid state
	printf '%-10s %-8s %-18s %-8s %s\n' SERVICE MEMBER ADDRESS PID STATE
	row() { # service member port kind pidname
		pid=$(pid_of "$5")
		if ! pid_alive "$pid"; then
			state=down
			pid=-
		elif ! member_ready "$4" "$3"; then
			state="not-answering"
		else
			state=up
			if [[ $4 == zk ]]; then
				state="up ($(zk_mode "$3"))"
			fi
		fi
		[[ $state == up* ]] || down=1
		printf '%-10s %-8s %-18s %-8s %s\n' "$1" "$2" "$HOST:$3" "$pid" "$state"
	}
	wanted redis && for i in "${!REDIS_PORTS[@]}"; do
		row redis "$((i + 1))" "${REDIS_PORTS[$i]}" redis "redis$((i + 1))"
	done
	wanted etcd && for i in "${!ETCD_NAMES[@]}"; do
		name=${ETCD_NAMES[$i]}
		row etcd "$name" "${ETCD_CLIENT_PORTS[$i]}" etcd "etcd-$name"
	done
	wanted zookeeper && for i in "${!ZK_IDS[@]}"; do
		row zookeeper "${ZK_IDS[$i]}" "${ZK_CLIENT_PORTS[$i]}" zk "zk${ZK_IDS[$i]}"
	done
	wanted postgres && row postgres pg "$PG_PORT" pg pg
	return "$down"
}

# ---------------------------------------------------------------- commands

cmd_up() {
	local t0=$SECONDS
	mkdir -p "$BIN" "$DATA" "$LOGS" "$PIDS" "$ZKCONF"
	install_debs
	if wanted etcd; then build_etcd; fi
	if wanted zookeeper; then write_zk_logging; fi
	if wanted redis; then start_redis; fi
	if wanted etcd; then start_etcd; fi
	if wanted zookeeper; then start_zk; fi
	if wanted postgres; then start_pg; fi
	wait_all
	write_env
	status_table || die "some services are not up"
	log "${SERVICES[*]} up in $((SECONDS - t0))s; env: $DIR/env"
}

cmd_down() {
	local name
	if wanted zookeeper; then
		for name in "${ZK_IDS[@]}"; do stop_pid "zk$name"; done
		rm -rf "$DATA/zk"
	fi
	if wanted etcd; then
		for name in "${ETCD_NAMES[@]}"; do stop_pid "etcd-$name"; done
		rm -rf "$DATA/etcd"
	fi
	if wanted redis; then
		for name in 1 2 3 4 5; do stop_pid "redis$name"; done
		rm -rf "$DATA"/redis*
	fi
	if wanted postgres; then stop_pg; fi
	log "stopped ${SERVICES[*]}; their data removed from $DATA (binaries and logs kept in $DIR)"
}

wanted() { # service: was it named on the command line (or were none)?
	[[ " ${SERVICES[*]} " == *" $1 "* ]]
}

select_services() { # args...
	local a
	(($# == 0)) && set -- "${ALL_SERVICES[@]}"
	for a in "$@"; do
		[[ " ${ALL_SERVICES[*]} " == *" $a "* ]] ||
			die "unknown service \"$a\"; want any of: ${ALL_SERVICES[*]}"
		SERVICES+=("$a")
	done
}

cmd_status() {
	if [[ ! -d $DIR ]]; then
		log "nothing started yet ($DIR does not exist)"
	fi
	mkdir -p "$PIDS"
	status_table
}

cmd=${1:-}
(($# > 0)) && shift
case "$cmd" in
up | down | status) select_services "$@" ;;
esac
case "$cmd" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*)
	echo "usage: $0 up|down|status [redis|etcd|zookeeper|postgres]..." >&2
	exit 2
	;;
esac
