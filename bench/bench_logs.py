"""Benchmark of the log layer on a big glog-like file (default 1 GiB, in a temporary directory, deleted after).

    python3 bench/bench_logs.py              # 1 GiB
    python3 bench/bench_logs.py --size 64M   # quick run

Prints: time to open a file and read its last 50 lines (median of 5), the same with tail_lines, memory of
opening and of indexing the whole file (RSS delta and tracemalloc peak), time to index fully, random
line access, refresh cost for appended lines, and a full-file error scan (the view's filter / first error).
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import re
import statistics
import sys
import tempfile
import time
import tracemalloc

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from xllm_tui.logs.glog import ERRORS_PATTERNS  # noqa: E402
from xllm_tui.logs.tail import LogFile, tail_lines  # noqa: E402

MESSAGES = [
    "Loading model weights from /models/GLM-4.7/model-{n:05d}-of-00093.safetensors",
    "Execute model done, batch size {n}, tokens {n}",
    "worker #3: available memory: 61.2 GB, total memory: 64 GB",
    "Generated {n} tokens in 12.3 ms, throughput 812.4 tokens/s, running requests 37",
    "kv cache usage 0.{n} blocks used {n}",
]


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]?)i?B?", text.strip(), re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: use e.g. 1G, 256M, 4096")
    return int(float(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2).upper()])


def generate(path: str, size: int, mode: str = "wb") -> int:
    """Write a glog-like file of about `size` bytes (mode "ab": append them); returns its line count."""
    rng = random.Random(7)
    chunk_lines = []
    for i in range(40_000):
        sev = "E" if i % 9973 == 0 else ("W" if i % 997 == 0 else "I")
        message = rng.choice(MESSAGES).format(n=rng.randint(1, 99999))
        chunk_lines.append(f"{sev}20251129 15:{i // 60 % 60:02d}:{i % 60:02d}.{i:06d} {12345 + i % 7} "
                           f"llm_engine.cpp:{200 + i % 50}] {message}\n")
    chunk = "".join(chunk_lines).encode()
    lines_per_chunk = len(chunk_lines)
    written = lines = 0
    with open(path, mode) as f:
        while written < size:
            f.write(chunk)
            written += len(chunk)
            lines += lines_per_chunk
    return lines


def median_time(fn, runs: int = 5) -> tuple[float, object]:
    times = []
    result = None
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds >= 0.001 else f"{seconds * 1e6:.0f} µs"


def bench_log_view(path: str) -> float:
    """Median time for the TUI's LogView to switch to the file and render its visible rows."""
    import asyncio

    from textual.app import App

    from xllm_tui.ui.widgets.log_view import LogView

    class BenchApp(App):
        def compose(self):
            yield LogView(None, id="log")

    times: list[float] = []

    async def run() -> None:
        app = BenchApp()
        async with app.run_test(size=(80, 24)) as pilot:
            view = app.query_one(LogView)
            await pilot.pause()
            for _ in range(5):
                view.set_path(None)
                await pilot.pause()
                start = time.perf_counter()
                view.set_path(path)
                rows = [view.render_line(y).text for y in range(view.scrollable_content_region.height)]
                times.append(time.perf_counter() - start)
                assert any(row.strip() for row in rows)
            view.set_path(None)

    asyncio.run(run())
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=1 << 30, help="file size, e.g. 1G (default), 256M")
    parser.add_argument("--dir", default=None, help="where to create the temporary file (default: system temp)")
    args = parser.parse_args(argv)
    process = psutil.Process()
    with tempfile.TemporaryDirectory(prefix="xllm-tui-bench-", dir=args.dir) as tmp:
        path = os.path.join(tmp, "node_0.log")
        start = time.perf_counter()
        lines = generate(path, args.size)
        size = os.path.getsize(path)
        print(f"file: {size / (1 << 20):.0f} MiB, {lines:,} lines (generated in {time.perf_counter() - start:.1f} s)")

        def open_and_tail():
            with LogFile(path) as log:
                return log.get_lines(log.line_count - 50, 50)

        t, last = median_time(open_and_tail)
        assert len(last) == 50 and last[-1].startswith(("I2025", "W2025", "E2025"))
        print(f"open + last 50 lines (LogFile, median of 5): {fmt_ms(t)}")
        t, _ = median_time(lambda: tail_lines(path, 50))
        print(f"tail_lines(path, 50)       (median of 5):   {fmt_ms(t)}")

        gc.collect()
        rss0 = process.memory_info().rss
        log = LogFile(path)
        rss_open = process.memory_info().rss - rss0
        start = time.perf_counter()
        log.index_all()
        t_index = time.perf_counter() - start
        rss_index = process.memory_info().rss - rss0
        assert log.line_count == lines, (log.line_count, lines)
        print(f"full index: {t_index:.2f} s ({size / t_index / (1 << 30):.2f} GiB/s), "
              f"index arrays {log.index_memory_bytes() / 1024:.0f} KiB")
        print(f"RSS delta: open {rss_open / (1 << 20):.1f} MiB, after full index {rss_index / (1 << 20):.1f} MiB")

        rng = random.Random(3)
        picks = [rng.randrange(lines) for _ in range(1000)]
        start = time.perf_counter()
        for i in picks:
            log.get_lines(i, 50)
        print(f"random screen (50 lines at a random line): {fmt_ms((time.perf_counter() - start) / len(picks))}")

        appended = b"".join(
            f"I20251129 16:00:00.{i:06d} 999 llm_engine.cpp:1] appended line {i}\n".encode() for i in range(1000)
        )
        refresh_times = []
        for _ in range(5):
            with open(path, "ab") as f:
                f.write(appended)
            start = time.perf_counter()
            new = log.refresh()
            refresh_times.append(time.perf_counter() - start)
            assert new == 1000
        print(f"refresh after 1000 appended lines (median of 5): {fmt_ms(statistics.median(refresh_times))}")
        start = time.perf_counter()
        assert log.refresh() == 0
        print(f"refresh with nothing new: {fmt_ms(time.perf_counter() - start)}")

        start = time.perf_counter()
        errors = log.scan_matching(ERRORS_PATTERNS)
        print(f"errors-only filter over the whole file: {time.perf_counter() - start:.2f} s ({len(errors):,} lines)")
        log.close()

        view_time = bench_log_view(path)
        print(f"LogView.set_path + render the last screen (80x24, median of 5): {fmt_ms(view_time)}")

        tracemalloc.start()
        with LogFile(path) as log:
            _, peak_open = tracemalloc.get_traced_memory()
            log.index_all()
            _, peak_index = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"tracemalloc peak: open {peak_open / (1 << 20):.2f} MiB, open + full index {peak_index / (1 << 20):.2f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
