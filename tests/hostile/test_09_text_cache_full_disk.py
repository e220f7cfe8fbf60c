"""Issue 11 item 9: the text-embedding disk cache is best-effort.  In the batch run its
``save_file`` raises ``SafetensorError`` (what a full disk gives; not an OSError): the demo
warns, segments every readable image and leaves no cache or temporary file."""
import os


def test_full_cache_disk_is_not_fatal(demo_runs):
    b = demo_runs['batch']
    assert 'could not store text embeddings' in b.err and 'No space left' in b.err
    assert 'Traceback' not in b.err
    folder = b.cache / 'text_embeddings'
    assert not folder.exists() or os.listdir(folder) == []
    for stem in ('grey16', 'rotated', 'x_png', 'x_jpg'):
        assert (b.outdir / f'{stem}_overlay.png').is_file()
        assert (b.outdir / f'{stem}_labels.png').is_file()
