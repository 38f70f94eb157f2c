/* A rank that only sleeps, for the idle, crash and start workloads: it appends "RANK start TIME PID" to
   $BENCH_STAMP as its first act (TIME: CLOCK_REALTIME at main(), so within a fraction of a millisecond of
   its exec), prints a ready line (the glog line xllm-tui's readiness looks for) and sleeps until killed.
   The rank comes from --node_rank=N (as xllm-tui launches it) or $BENCH_RANK. Built by bench/run.sh. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    const char *rank = getenv("BENCH_RANK");
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--node_rank=", 12) == 0) rank = argv[i] + 12;
        if (strcmp(argv[i], "--helpxml") == 0) return 0;
    }
    if (!rank) rank = "0";
    const char *stamp = getenv("BENCH_STAMP");
    char buf[512];
    if (stamp) {
        int fd = open(stamp, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd >= 0) {
            int n = snprintf(buf, sizeof buf, "%s start %ld.%06ld %d\n", rank, (long)ts.tv_sec, ts.tv_nsec / 1000, (int)getpid());
            if (write(fd, buf, n) < 0) {}
            close(fd);
        }
    }
    /* what a ready xllm rank logs last: connected to rank 0, kv cache sized, serving (glog.py's milestones) */
    int n = snprintf(buf, sizeof buf,
                     "I1130 00:00:00.000000 %6d worker_server.cpp:95] Worker#%s connect to 127.0.0.1:1 success\n"
                     "I1130 00:00:00.000001 %6d llm_engine.cpp:293] kv cache capacity: 1024\n"
                     "I1130 00:00:00.000002 %6d xllm_server.cpp:59] Brpc Server started on port 1 rank=%s\n",
                     (int)getpid(), rank, (int)getpid(), (int)getpid(), rank);
    if (write(1, buf, n) < 0) {}
    for (;;) pause();
}
