"""``bench.instructions`` reads callgrind's dump files itself: the instructions per shared
object (name compression, the callee's inclusive cost after ``calls=`` skipped), scaled to
the file's summary, and the table of the figures with the server's ratios."""

from __future__ import annotations

import pytest

from bench.instructions import by_object, counts, table

# A dump in callgrind's format, as valgrind 3.19 writes one after --zero: objects named in
# full the first time (by ob= or cob=), by id after; positions relative (+n, -n, *).
DUMP = """\
# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 4242
part: 1
thread: 1
events: Ir
summary: 1000

ob=(1) /usr/lib/libpython3.11.so.1.0
fl=(1) ceval.c
fn=(1) _PyEval_EvalFrameDefault
12 400
+3 100
cob=(2) /usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6
cfi=(2) ???
cfn=(2) sqlite3_step
calls=2 0
* 300
* 20

ob=(2)
fl=(2)
fn=(2)
0 250
-1 50
ob=(3) /usr/lib/libc.so.6
fl=(3) memset.S
fn=(3) memset
0 180

totals: 1000
"""


def test_self_cost_per_object_skips_the_inclusive_cost_of_calls():
    assert by_object(DUMP) == {"libpython3.11.so.1.0": 520, "libsqlite3.so.0.8.6": 300, "libc.so.6": 180}


def test_objects_are_scaled_to_each_files_summary(tmp_path):
    first = tmp_path / "cg.4242.1-01"
    first.write_text(DUMP)
    second = tmp_path / "cg.4242.1-02"
    second.write_text(DUMP.replace("summary: 1000", "summary: 500"))  # counted 1000 self, summary 500
    threads, objects = counts([first, second])
    assert threads == [1000, 500]
    assert objects == pytest.approx({"libpython3.11.so.1.0": 780, "libsqlite3.so.0.8.6": 450, "libc.so.6": 270})
    assert sum(objects.values()) == pytest.approx(1500)


def test_a_file_without_a_summary_is_refused(tmp_path):
    path = tmp_path / "cg.1.1-01"
    path.write_text("events: Ir\n")
    with pytest.raises(ValueError, match="cg.1.1-01: not a callgrind dump"):
        counts([path])


def test_the_table_gives_the_servers_ratios_to_each_reference_measured():
    def result(total: float, loop: float) -> dict:
        return {
            "per_alert": total,
            "main_thread_per_alert": loop,
            "other_threads_per_alert": total - loop,
            "objects_per_alert": {"libpython3.11.so.1.0": total * 0.9, "libsqlite3.so.0.8.6": total * 0.1},
        }

    text = table({"server": result(6e6, 5e6), "durable": result(3e6, 2.5e6), "quart": result(4e6, 3.5e6)})
    assert "server / durable: 2.00x all threads, 2.00x the event loop" in text
    assert "server / quart: 1.50x all threads, 1.43x the event loop" in text
    assert "server: libpython3.11.so.1.0 5,400k, libsqlite3.so.0.8.6 600k" in text
    only = table({"server": result(6e6, 5e6)})
    assert "server /" not in only  # no reference measured: no ratio


@pytest.mark.parametrize("one_market", [False, True])
def test_the_alerts_counted_go_to_one_market_when_asked(tmp_path, monkeypatch, one_market):
    import argparse

    from bench import instructions
    from bench.emulator import bench_tickers
    from bench.targets import TICKERS, Deadline, Target

    loads: list[tuple[str, int, str]] = []

    def load_run(label, port, n, concurrency, account, secret, tmp, deadline, tickers=TICKERS):
        loads.append((label, n, tickers))
        return {"ids_2xx": [str(i) for i in range(n)], "statuses": {"200": n}}

    class Launched:
        name, pid = "server-instructions", 1

        def stop(self) -> None:
            pass

    monkeypatch.setattr(Target, "launch", lambda self, name: Launched())
    monkeypatch.setattr(instructions, "first_filled_order", lambda *a, **k: 0.1)
    monkeypatch.setattr(instructions, "load_run", load_run)
    monkeypatch.setattr(instructions, "worker_pid", lambda process: 2)
    monkeypatch.setattr(instructions, "callgrind_control", lambda *a: None)
    monkeypatch.setattr(instructions, "dump_files", lambda *a: [tmp_path / "callgrind.out.2-01"])
    monkeypatch.setattr(instructions, "counts", lambda files: ([3000, 1000], {"libpython": 4000}))
    args = argparse.Namespace(n=4, warmup=2, concurrency=32, one_market=one_market, start_timeout=5)
    measured = instructions.measure(Target("server", lambda name: None), args, tmp_path, "secret", Deadline(60))
    expected = bench_tickers()[0] if one_market else TICKERS
    assert [(n, tickers) for _, n, tickers in loads] == [(2, expected), (4, expected)]
    assert measured["per_alert"] == 1000 and measured["one_market"] is one_market
    assert expected.count(",") == (0 if one_market else len(bench_tickers()) - 1)
