#!/usr/bin/env bash
# Real Kafka (Apache Kafka, KRaft, single node) and real Redis (Debian's redis-server) for the
# test suite, on free loopback ports, started and stopped by the project itself.
#
#   scripts/services.sh up            start both (idempotent: a no-op when they answer)
#   scripts/services.sh down          stop exactly the processes this script started
#   scripts/services.sh status        show what runs where
#   scripts/services.sh stop NAME     stop kafka or redis, keeping its port and data
#   scripts/services.sh start NAME    start it again on the same port with the same data
#   scripts/services.sh env           print export lines (KAFKA_BOOTSTRAP, REDIS_URL)
#   scripts/services.sh fetch         only fetch Kafka's jars and install redis-server; print the
#                                     jars' folder (the soak, scripts/soak.sh, runs its own cluster)
#   scripts/services.sh kafka-acls ARGS  Kafka's AclCommand against the PLAINTEXT listener
#                                     (e.g. --add --deny-principal User:bridge --operation Write
#                                     --topic T); fault tests revoke writes with it at runtime
#
# Kafka runs the StandardAuthorizer: a resource without ACLs is open to everyone, the
# PLAINTEXT and CONTROLLER principal (User:ANONYMOUS) is a super user, so only the SASL_SSL
# users (bridge, bridge256) are subject to the ACLs a test adds.
#
# Where they listen is written to $RYZE_SERVICES_DIR/services.json (default .services/).
# Kafka's jars come from Maven Central through Maven, cached in $RYZE_CACHE_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${RYZE_SERVICES_DIR:-$ROOT/.services}"
CACHE="${RYZE_CACHE_DIR:-$HOME/.cache/ryze-bridge}"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$ROOT/scripts/kafka/pom.xml")"
KAFKA_LIBS="$CACHE/kafka-$KAFKA_VERSION/libs"
KAFKA_DIR="$STATE/kafka"
REDIS_DIR="$STATE/redis"
JSON="$STATE/services.json"

say() { echo "services: $*" >&2; }
die() { say "error: $*"; exit 1; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_json() {
    local kport rport
    kport="$(cat "$KAFKA_DIR/port" 2>/dev/null || echo 0)"
    rport="$(cat "$REDIS_DIR/port" 2>/dev/null || echo 0)"
    local sport tport
    sport="$(cat "$KAFKA_DIR/sasl-port" 2>/dev/null || echo 0)"
    tport="$(cat "$REDIS_DIR/tls-port" 2>/dev/null || echo 0)"
    cat >"$JSON.tmp" <<EOF
{
  "kafka": {"bootstrap_servers": "127.0.0.1:$kport", "pid": $(cat "$KAFKA_DIR/pid" 2>/dev/null || echo 0), "log": "$KAFKA_DIR/broker.log"},
  "redis": {"url": "redis://127.0.0.1:$rport/0", "pid": $(cat "$REDIS_DIR/pid" 2>/dev/null || echo 0), "log": "$REDIS_DIR/redis.log"},
  "kafka_sasl_ssl": {"bootstrap_servers": "127.0.0.1:$sport", "username": "bridge", "username_256": "bridge256", "password_file": "$TLS_DIR/kafka-password"},
  "redis_tls": {"url": "rediss://127.0.0.1:$tport/0", "username": "bridge", "reader": "reader", "password_file": "$TLS_DIR/redis-password"},
  "tls": {"ca_file": "$TLS_DIR/ca.pem", "other_ca_file": "$TLS_DIR/other-ca.pem", "server_cert": "$TLS_DIR/server.crt", "server_key": "$TLS_DIR/server.key", "client_cert": "$TLS_DIR/client.crt", "client_key": "$TLS_DIR/client.key"}
}
EOF
    mv "$JSON.tmp" "$JSON"
}

# ---- TLS material (a private CA, a server and a client certificate) ------------------------
TLS_DIR="$STATE/tls"
make_tls() {
    [[ -f "$TLS_DIR/server.pem" ]] && return
    command -v openssl >/dev/null || die "openssl is needed to make the test certificates"
    mkdir -p "$TLS_DIR"
    local d="$TLS_DIR"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=ryze-bridge test CA" \
        -keyout "$d/ca.key" -out "$d/ca.pem" >/dev/null 2>&1
    for name in server client; do
        openssl req -newkey rsa:2048 -nodes -subj "/CN=$name" \
            -keyout "$d/$name.key" -out "$d/$name.csr" >/dev/null 2>&1
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$d/$name.ext"
        openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
            -days 30 -extfile "$d/$name.ext" -out "$d/$name.crt" >/dev/null 2>&1
        cat "$d/$name.key" "$d/$name.crt" >"$d/$name.pem"
    done
    # a CA nobody trusts, for the "untrusted CA" tests
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=someone else" \
        -keyout "$d/other-ca.key" -out "$d/other-ca.pem" >/dev/null 2>&1
    python3 -c 'import secrets; print(secrets.token_urlsafe(18))' >"$d/kafka-password"
    python3 -c 'import secrets; print(secrets.token_urlsafe(18))' >"$d/redis-password"
    chmod 600 "$d"/*.key "$d"/*-password
}

# ---- Kafka -------------------------------------------------------------------------------
fetch_kafka() {
    if [[ -f "$KAFKA_LIBS/.complete" ]]; then return; fi
    command -v mvn >/dev/null || die "mvn not found (Java 17 and Maven are needed for Kafka)"
    command -v java >/dev/null || die "java not found"
    mkdir -p "$CACHE"
    # one fetch at a time: two scripts started together (a test run beside a soak) would
    # otherwise delete and copy the same folder at once
    exec 9>"$CACHE/.kafka-$KAFKA_VERSION.lock"
    flock -w 900 9 || die "another fetch of Kafka holds $CACHE/.kafka-$KAFKA_VERSION.lock"
    if [[ ! -f "$KAFKA_LIBS/.complete" ]]; then
        say "fetching Apache Kafka $KAFKA_VERSION from Maven Central"
        rm -rf "$KAFKA_LIBS"
        mkdir -p "$KAFKA_LIBS"
        mvn -q -B -f "$ROOT/scripts/kafka/pom.xml" dependency:copy-dependencies \
            -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS" >&2
        touch "$KAFKA_LIBS/.complete"
    fi
    exec 9>&-
}

kafka_java() { java -Xms128m -Xmx768m -XX:+UseG1GC -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" -cp "$KAFKA_LIBS/*" "$@"; }

configure_kafka() {
    mkdir -p "$KAFKA_DIR/data"
    local port controller sasl
    port="$(free_port)"
    controller="$(free_port)"
    sasl="$(free_port)"
    echo "$port" >"$KAFKA_DIR/port"
    echo "$sasl" >"$KAFKA_DIR/sasl-port"
    cat >"$KAFKA_DIR/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller
listeners=PLAINTEXT://127.0.0.1:$port,SASL_SSL://127.0.0.1:$sasl,CONTROLLER://127.0.0.1:$controller
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_SSL://127.0.0.1:$sasl
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=true
super.users=User:ANONYMOUS
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location=$TLS_DIR/server.pem
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.pem
ssl.client.auth=none
inter.broker.listener.name=PLAINTEXT
log.dirs=$KAFKA_DIR/data
num.partitions=3
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
log.flush.interval.messages=9223372036854775807
num.network.threads=2
num.io.threads=2
background.threads=2
EOF
    cat >"$KAFKA_DIR/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $KAFKA_DIR/broker.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = warn
logger.apache.name = org.apache.kafka
logger.apache.level = warn
EOF
    local cluster
    cluster="$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)"
    local password
    password="$(cat "$TLS_DIR/kafka-password")"
    kafka_java kafka.tools.StorageTool format --standalone --cluster-id="$cluster" \
        -c "$KAFKA_DIR/server.properties" \
        --add-scram "SCRAM-SHA-512=[name=bridge,password=$password]" \
        --add-scram "SCRAM-SHA-256=[name=bridge256,password=$password]" \
        >"$KAFKA_DIR/format.log" 2>&1 \
        || { cat "$KAFKA_DIR/format.log" >&2; die "kafka storage format failed"; }
}

start_kafka() {
    if alive "$KAFKA_DIR/pid"; then return; fi
    fetch_kafka
    [[ -f "$KAFKA_DIR/server.properties" ]] || configure_kafka
    local port
    port="$(cat "$KAFKA_DIR/port")"
    port_open "$port" && die "port $port is taken by another process"
    say "starting kafka on 127.0.0.1:$port"
    nohup java -Xms128m -Xmx768m -XX:+UseG1GC -XX:TieredStopAtLevel=1 \
        -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
        -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_DIR/server.properties" \
        >"$KAFKA_DIR/stdout.log" 2>&1 &
    echo $! >"$KAFKA_DIR/pid"
    wait_kafka "$port"
}

wait_kafka() {
    local port="$1" deadline=$((SECONDS + 120))
    until kafka_ready "$port"; do
        if ! alive "$KAFKA_DIR/pid"; then
            tail -n 40 "$KAFKA_DIR/stdout.log" "$KAFKA_DIR/broker.log" >&2 2>/dev/null || true
            die "kafka exited during start-up"
        fi
        ((SECONDS < deadline)) || { tail -n 40 "$KAFKA_DIR/broker.log" >&2 || true; die "kafka did not answer within 120 s"; }
        sleep 0.5
    done
    say "kafka answers a metadata request on 127.0.0.1:$port"
}

kafka_ready() {
    port_open "$1" || return 1
    timeout 30 java -Xmx128m -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
        -cp "$KAFKA_LIBS/*" org.apache.kafka.tools.TopicCommand \
        --bootstrap-server "127.0.0.1:$1" --list >/dev/null 2>&1
}

# ---- Redis -------------------------------------------------------------------------------
install_redis() {
    command -v redis-server >/dev/null && return
    [[ "$(id -u)" == 0 ]] || die "redis-server is missing; install Debian's redis-server"
    say "installing Debian's redis-server"
    export DEBIAN_FRONTEND=noninteractive
    mkdir -p "$STATE"
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server redis-tools; } \
        >"$STATE/apt.log" 2>&1 || { tail -n 30 "$STATE/apt.log" >&2; die "apt-get install redis-server failed"; }
}

install_prometheus() {
    # Debian's prometheus package: the server and promtool, used by the observability tests.
    command -v prometheus >/dev/null && command -v promtool >/dev/null && return
    [[ "$(id -u)" == 0 ]] || die "prometheus is missing; install Debian's prometheus"
    say "installing Debian's prometheus (server and promtool)"
    mkdir -p "$STATE"
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; } \
        >"$STATE/apt-prometheus.log" 2>&1 || { tail -n 30 "$STATE/apt-prometheus.log" >&2; die "apt-get install prometheus failed"; }
}

start_redis() {
    if alive "$REDIS_DIR/pid"; then return; fi
    install_redis
    mkdir -p "$REDIS_DIR"
    [[ -f "$REDIS_DIR/port" ]] || free_port >"$REDIS_DIR/port"
    local port
    port="$(cat "$REDIS_DIR/port")"
    port_open "$port" && die "port $port is taken by another process"
    say "starting redis on 127.0.0.1:$port"
    [[ -f "$REDIS_DIR/tls-port" ]] || free_port >"$REDIS_DIR/tls-port"
    local password
    password="$(cat "$TLS_DIR/redis-password")"
    {
        echo "user default on nopass ~* &* +@all"
        echo "user bridge on >$password ~ryze:* resetchannels -@all +xadd +multi +exec +ping +hello"
        echo "user reader on >$password ~* resetchannels -@all +@read +ping +hello"
    } >"$REDIS_DIR/users.acl"
    nohup redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
        --tls-port "$(cat "$REDIS_DIR/tls-port")" --tls-cert-file "$TLS_DIR/server.crt" \
        --tls-key-file "$TLS_DIR/server.key" --tls-ca-cert-file "$TLS_DIR/ca.pem" \
        --tls-auth-clients optional --aclfile "$REDIS_DIR/users.acl" \
        --daemonize no --dir "$REDIS_DIR" --logfile "$REDIS_DIR/redis.log" \
        >/dev/null 2>&1 &
    echo $! >"$REDIS_DIR/pid"
    local deadline=$((SECONDS + 30))
    until [[ "$(redis-cli -p "$port" ping 2>/dev/null)" == PONG ]]; do
        alive "$REDIS_DIR/pid" || { tail -n 20 "$REDIS_DIR/redis.log" >&2 || true; die "redis exited"; }
        ((SECONDS < deadline)) || die "redis did not answer PING within 30 s"
        sleep 0.2
    done
    say "redis answers PING on 127.0.0.1:$port"
}

# ---- stopping ----------------------------------------------------------------------------
stop_pid() {
    local pidfile="$1" name="$2"
    alive "$pidfile" || { rm -f "$pidfile"; return 0; }
    local pid
    pid="$(cat "$pidfile")"
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name did not stop in 20 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

cmd="${1:-status}"
mkdir -p "$STATE"
case "$cmd" in
    up)
        install_prometheus
        make_tls
        start_redis
        start_kafka
        write_json
        ;;
    down)
        stop_pid "$KAFKA_DIR/pid" kafka
        stop_pid "$REDIS_DIR/pid" redis
        rm -rf "$KAFKA_DIR" "$REDIS_DIR" "$TLS_DIR" "$JSON"
        ;;
    stop)
        case "${2:-}" in
            kafka) stop_pid "$KAFKA_DIR/pid" kafka ;;
            redis)
                # SHUTDOWN SAVE writes the dataset even though periodic saves are off, so a
                # restart (an outage test) keeps what the broker had acknowledged.
                redis-cli -p "$(cat "$REDIS_DIR/port")" shutdown save >/dev/null 2>&1 || true
                stop_pid "$REDIS_DIR/pid" redis
                ;;
            *) die "usage: $0 stop kafka|redis" ;;
        esac
        ;;
    start)
        make_tls
        case "${2:-}" in
            kafka) start_kafka ;;
            redis) start_redis ;;
            *) die "usage: $0 start kafka|redis" ;;
        esac
        write_json
        ;;
    status)
        for name in kafka redis; do
            dir="$STATE/$name"
            if alive "$dir/pid"; then
                echo "$name: running (pid $(cat "$dir/pid"), port $(cat "$dir/port"))"
            else
                echo "$name: stopped"
            fi
        done
        ;;
    kafka-acls)
        alive "$KAFKA_DIR/pid" || die "kafka is not running"
        shift
        timeout 60 java -Xmx128m -XX:TieredStopAtLevel=1 \
            -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" -cp "$KAFKA_LIBS/*" \
            org.apache.kafka.tools.AclCommand \
            --bootstrap-server "127.0.0.1:$(cat "$KAFKA_DIR/port")" "$@"
        ;;
    fetch)
        install_redis
        fetch_kafka
        echo "$KAFKA_LIBS"
        ;;
    env)
        [[ -f "$JSON" ]] || die "services are not up"
        echo "export KAFKA_BOOTSTRAP=127.0.0.1:$(cat "$KAFKA_DIR/port")"
        echo "export REDIS_URL=redis://127.0.0.1:$(cat "$REDIS_DIR/port")/0"
        ;;
    *)
        die "usage: $0 up|down|status|start NAME|stop NAME|env|fetch|kafka-acls ARGS"
        ;;
esac
