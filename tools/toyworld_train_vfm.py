"""Train the toy-world VFM (CPU, one thread, seeded) and record it in manifest.json.

Usage: python tools/toyworld_train_vfm.py [--out gpua_mmseg/data/toyworld/toy_vfm.safetensors]
       [--steps N --batch B --lr LR --seed S ...]
Defaults reproduce the shipped weights bit for bit (same torch build, CPU).
"""
import sys

from gpua_mmseg.toyworld.cli import main

if __name__ == '__main__':
    sys.exit(main('vfm'))
