"""Issue 11 item 8: temporary files that a kill -9 of the demo left in ``--out`` (hidden
``.X.png.<pid>.<random>.tmp``) are removed by the next run; a live writer's file is not."""
import os


def test_next_run_removes_stale_temp_files(demo_runs):
    b = demo_runs['batch']
    for p in b.stale:
        assert not p.exists(), p
    assert b.live.exists()  # its writer (this test process) is alive
    left = [n for n in os.listdir(b.outdir) if n.endswith('.tmp')]
    assert left == [b.live.name]
