/*
 * A lean paced MQTT publisher for bench/ingest.py's live runs (issue #14 item 2).
 *
 * Publishes single native readings with QoS 1 (MQTT 5, as devices and the Python publisher do)
 * at a fixed rate, each stamped with its publish time, so that the offered rate is reached on the
 * same two cores as the broker, the ingester and PostgreSQL. One thread: libmosquitto's
 * mosquitto_loop() reads the PUBACKs and waits for the next message's due time.
 *
 * Payload, as bench/ingest.py's Python publisher writes it (orjson):
 *   {"time":"2026-11-28T18:00:00.123456+00:00","quantity":"pm25","value":12.3}
 * on quartier/v1/NETWORK/dev-K/up, K = part + parts * (i % per_part): the devices of this part.
 *
 * Built by bench/mqtt_pub.py (cc ... -lmosquitto; Debian package libmosquitto-dev).
 * Prints one line: sent=N acked=N failed=N seconds=S lag_max_ms=L (lag: how far the send fell
 * behind its schedule). Exit status 0 when every message was acknowledged without an error.
 */
#define _POSIX_C_SOURCE 200809L
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long acked = 0;
static long failed = 0;
static int connect_rc = -1;

static double now_mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void on_connect(struct mosquitto *m, void *u, int rc, int flags,
                       const mosquitto_property *p) {
    (void)m; (void)u; (void)flags; (void)p;
    connect_rc = rc;
}

static void on_publish(struct mosquitto *m, void *u, int mid, int reason,
                       const mosquitto_property *p) {
    (void)m; (void)u; (void)mid; (void)p;
    acked++;
    if (reason >= 128) failed++; /* MQTT 5: codes below 128 are success (0x10: no subscribers) */
}

/* "2026-11-28T18:00:00.123456+00:00", as Python's datetime.isoformat() for UTC */
static int stamp(char *out, size_t n) {
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t k = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    return (int)k + snprintf(out + k, n - k, ".%06ld+00:00", ts.tv_nsec / 1000);
}

static void usage(void) {
    fprintf(stderr,
            "usage: mqtt_pub -h HOST -p PORT -r RATE -n COUNT [-u USER -P PASSWORD]\n"
            "                [-N NETWORK] [-D DEVICES_PER_PART] [-k PART] [-K PARTS]\n"
            "                [-i CLIENT_ID] [-w WINDOW] [-t ACK_TIMEOUT_S]\n");
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *user = NULL, *password = NULL, *network = "bench";
    char client_id[64];
    int port = 1883, part = 0, parts = 1, per_part = 200, window = 2000, ack_timeout = 60;
    double rate = 1000;
    long count = 0;
    snprintf(client_id, sizeof client_id, "bench-cpub-%d", (int)getpid());
    int opt;
    while ((opt = getopt(argc, argv, "h:p:u:P:r:n:N:D:k:K:i:w:t:")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'u': user = optarg; break;
        case 'P': password = optarg; break;
        case 'r': rate = atof(optarg); break;
        case 'n': count = atol(optarg); break;
        case 'N': network = optarg; break;
        case 'D': per_part = atoi(optarg); break;
        case 'k': part = atoi(optarg); break;
        case 'K': parts = atoi(optarg); break;
        case 'i': snprintf(client_id, sizeof client_id, "%s", optarg); break;
        case 'w': window = atoi(optarg); break;
        case 't': ack_timeout = atoi(optarg); break;
        default: usage(); return 2;
        }
    }
    if (rate <= 0 || count <= 0 || per_part <= 0 || parts <= 0 || window <= 0) {
        usage();
        return 2;
    }

    mosquitto_lib_init();
    struct mosquitto *m = mosquitto_new(client_id, true, NULL);
    if (!m) {
        fprintf(stderr, "mqtt_pub: cannot create a client\n");
        return 1;
    }
    mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_int_option(m, MOSQ_OPT_SEND_MAXIMUM, window < 65535 ? window : 65535);
    mosquitto_connect_v5_callback_set(m, on_connect);
    mosquitto_publish_v5_callback_set(m, on_publish);
    if (user) mosquitto_username_pw_set(m, user, password);
    int rc = mosquitto_connect_bind_v5(m, host, port, 30, NULL, NULL);
    if (rc != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "mqtt_pub: cannot connect to %s:%d: %s\n", host, port,
                mosquitto_strerror(rc));
        return 1;
    }
    double t_conn = now_mono();
    while (connect_rc < 0 && now_mono() - t_conn < 10) mosquitto_loop(m, 10, 1);
    if (connect_rc != 0) {
        fprintf(stderr, "mqtt_pub: the broker at %s:%d refused the connection: %s\n", host,
                port, connect_rc < 0 ? "no CONNACK in 10 s" : mosquitto_reason_string(connect_rc));
        return 1;
    }

    char topic[256], payload[160], ts[48];
    double start = now_mono(), lag_max = 0, last_progress = start;
    long sent = 0, acked_before = 0;
    while (sent < count) {
        double due = start + (double)sent / rate, now = now_mono();
        if (due - now > 0.001 || sent - acked >= window) {
            /* wait for the schedule (or for PUBACKs to free the window), reading PUBACKs */
            int ms = (int)((due - now) * 1000);
            mosquitto_loop(m, ms < 1 ? 1 : (ms > 100 ? 100 : ms), 1);
            if (acked != acked_before) {
                acked_before = acked;
                last_progress = now_mono();
            } else if (now_mono() - last_progress > ack_timeout) {
                fprintf(stderr, "mqtt_pub: no PUBACK for %d s (%ld pending)\n", ack_timeout,
                        sent - acked);
                return 1;
            }
            continue;
        }
        if (now - due > lag_max) lag_max = now - due;
        long i = sent;
        snprintf(topic, sizeof topic, "quartier/v1/%s/dev-%ld/up", network,
                 part + (long)parts * (i % per_part));
        stamp(ts, sizeof ts);
        int len = snprintf(payload, sizeof payload,
                           "{\"time\":\"%s\",\"quantity\":\"pm25\",\"value\":%.1f}", ts,
                           (double)(i % 500) / 10);
        rc = mosquitto_publish(m, NULL, topic, len, payload, 1, false);
        if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN) {
            fprintf(stderr, "mqtt_pub: cannot publish to %s: %s\n", topic, mosquitto_strerror(rc));
            return 1;
        }
        sent++;
        if ((sent & 63) == 0) mosquitto_loop(m, 0, 1); /* read PUBACKs while behind schedule */
    }
    double t_sent = now_mono();
    last_progress = t_sent;
    acked_before = acked;
    while (acked < sent) {
        rc = mosquitto_loop(m, 50, 1);
        if (rc != MOSQ_ERR_SUCCESS) mosquitto_reconnect(m);
        if (acked != acked_before) {
            acked_before = acked;
            last_progress = now_mono();
        } else if (now_mono() - last_progress > ack_timeout) {
            fprintf(stderr, "mqtt_pub: no PUBACK for %d s (%ld pending)\n", ack_timeout,
                    sent - acked);
            return 1;
        }
    }
    double seconds = now_mono() - start;
    mosquitto_disconnect(m);
    mosquitto_loop(m, 10, 1);
    mosquitto_destroy(m);
    mosquitto_lib_cleanup();
    printf("sent=%ld acked=%ld failed=%ld seconds=%.3f send_seconds=%.3f lag_max_ms=%.1f\n", sent,
           acked, failed, seconds, t_sent - start, lag_max * 1000);
    return failed ? 1 : 0;
}
