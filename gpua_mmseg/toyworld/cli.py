"""Shared CLI of tools/toyworld_train_clip.py and tools/toyworld_train_vfm.py."""
import argparse
import os
import os.path as osp
import shlex
import sys
import time


def main(kind, argv=None):
    from gpua_mmseg.toyworld import train as T
    from gpua_mmseg.toyworld.models import CLIP_WEIGHTS, MANIFEST, VFM_WEIGHTS
    defaults = T.CLIP_DEFAULTS if kind == 'clip' else T.VFM_DEFAULTS
    p = argparse.ArgumentParser(description=f'Train the toy-world {kind.upper()} on CPU (seeded, '
                                'bit-reproducible) and record it in the manifest.')
    p.add_argument('--out', default=CLIP_WEIGHTS if kind == 'clip' else VFM_WEIGHTS,
                   help='safetensors file to write (default: the shipped toy weights)')
    p.add_argument('--manifest', default=None,
                   help='manifest.json to update (default: manifest.json beside --out)')
    for k, v in defaults.items():
        p.add_argument('--' + k, type=type(v), default=v)
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch < 2:
        print(f'error: --steps must be >= 1 and --batch >= 2 (got {args.steps}, {args.batch})',
              file=sys.stderr)
        return 2
    manifest = args.manifest or osp.join(osp.dirname(osp.abspath(args.out)), 'manifest.json')
    hp = {k: getattr(args, k) for k in defaults}
    fn = T.train_clip if kind == 'clip' else T.train_vfm
    t0 = time.time()
    model, stats = fn(**hp)
    digest = T.state_dict_sha256(model)
    sha = T.save_weights(model, args.out, T.torch.float16 if kind == 'clip' else None)
    entry = dict(file=osp.basename(args.out), sha256=sha, bytes=os.path.getsize(args.out),
                 state_dict_sha256_fp32=digest,
                 command='python ' + ' '.join(shlex.quote(a) for a in
                                              [f'tools/toyworld_train_{kind}.py'] +
                                              sys.argv[1:]),
                 hyper_parameters=hp, train_data_seed=T.TRAIN_DATA_SEED,
                 wall_seconds=round(time.time() - t0, 1), stats=stats,
                 torch_version=T.torch.__version__, threads=1, kernel_probe=T.kernel_probe(),
                 cpu_capability=T.torch.backends.cpu.get_cpu_capability(),
                 dtype='float16' if kind == 'clip' else 'float32')
    T.update_manifest(manifest, kind, entry)
    print(f'wrote {args.out} (sha256 {sha[:12]}..., {entry["bytes"]} bytes); manifest {manifest}')
    return 0
