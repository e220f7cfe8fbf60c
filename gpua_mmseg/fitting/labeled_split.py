"""Where SOTAlign's labelled images come from: a split that is not the evaluated one.

``tools/fit_alignment.py --method sotalign --labeled N`` fits on (patch, class) pairs of N
labelled images.  Taking them from the test split that is then evaluated leaks labels into the
benchmark, so by default they come from the dataset's *train* split: ``train_dataloader.dataset``
when the config has one, else the test dataset's config with MMSeg's split names swapped in
its ``ann_file`` / ``data_prefix`` (``val.txt -> train.txt``, ``images/validation ->
images/training``, ``leftImg8bit/val -> leftImg8bit/train``, ``val2017 -> train2017``).
The test split needs ``allow_test_labels`` and leaves a warning in the artifact metadata.
"""
import copy
import os.path as osp
from typing import Any, Dict, Optional, Tuple

import torch

LABELED_SPLITS = ('train', 'test')
#: MMSeg split names of an evaluated split -> the matching train split (path components / stems)
TRAIN_NAMES = {'val': 'train', 'validation': 'training', 'test': 'train', 'val2017': 'train2017',
               'test2017': 'train2017', 'valid': 'train'}
TEST_LABELS_WARNING = ('SOTAlign labelled pairs were taken from the evaluated (test) split '
                       '(--allow-test-labels): results on that split are not label-free')


def _to_train(path: str) -> str:
    parts = path.replace('\\', '/').split('/')
    out = []
    for p in parts:
        stem, ext = osp.splitext(p)
        if p in TRAIN_NAMES:
            out.append(TRAIN_NAMES[p])
        elif stem in TRAIN_NAMES:
            out.append(TRAIN_NAMES[stem] + ext)
        else:
            out.append(p)
    return '/'.join(out)


def train_dataset_cfg(cfg, test_ds_cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The labelled train split's dataset config (with the test pipeline, annotations kept).

    Raises:
        ValueError: the config has no train dataloader and the test split's paths contain no
            MMSeg split name to swap.
    """
    train = (cfg.get('train_dataloader') or {}).get('dataset') if hasattr(cfg, 'get') else None
    if train:
        out = copy.deepcopy(train.to_dict() if hasattr(train, 'to_dict') else dict(train))
        out['pipeline'] = copy.deepcopy(test_ds_cfg.get('pipeline', []))
        return out
    out = copy.deepcopy(test_ds_cfg)
    changed = False
    if out.get('ann_file'):
        new = _to_train(out['ann_file'])
        changed |= new != out['ann_file']
        out['ann_file'] = new
    prefix = dict(out.get('data_prefix') or {})
    for k, v in prefix.items():
        if isinstance(v, str) and v:
            new = _to_train(v)
            changed |= new != v
            prefix[k] = new
    out['data_prefix'] = prefix
    if not changed:
        raise ValueError(
            'cannot locate a labelled train split for --labeled: the config has no '
            'train_dataloader.dataset and the test split (ann_file '
            f'{test_ds_cfg.get("ann_file")!r}, data_prefix {test_ds_cfg.get("data_prefix")!r}) '
            'has no val/validation/test name to swap for train; add a train_dataloader to the '
            'config, or pass --labeled-split test --allow-test-labels')
    return out


def check_labeled_split(split: str, allow_test_labels: bool) -> None:
    if split not in LABELED_SPLITS:
        raise ValueError(f'--labeled-split must be one of {LABELED_SPLITS}, got {split!r}')
    if split == 'test' and not allow_test_labels:
        raise ValueError('--labeled-split test would fit on labels of the split that is '
                         'evaluated; pass --allow-test-labels to do it anyway (a warning is '
                         'recorded in the artifact), or use the default --labeled-split train')


def collect_labeled_pairs(seg, vfm, cfg, n_images: int
                          ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, Dict[str, Any]]:
    """Pairs ``(vfm [n, dv], clip [n, dc], label [n])`` from the first ``n_images`` images of the
    train split, plus a description of that split for the artifact metadata."""
    from .extract import extract_image_features, preprocess_item
    from .pipeline import _plain, build_fit_dataset
    # the config's own test dataset (its pipeline still loads the masks)
    test_ds_cfg = copy.deepcopy(_plain(cfg.get('test_dataloader', {}).get('dataset')))
    ds_cfg = train_dataset_cfg(cfg, test_ds_cfg)
    view = copy.deepcopy(cfg)
    view.test_dataloader.dataset = ds_cfg
    ann = ds_cfg.get('ann_file')
    if ann and not osp.isabs(ann) and ds_cfg.get('data_root'):
        ann = osp.join(ds_cfg['data_root'], ann)
    if ann and not osp.isfile(ann):
        raise FileNotFoundError(f'the labelled train split for --labeled is missing: {ann!r} '
                                'does not exist; prepare it or pass --labeled-split test '
                                '--allow-test-labels')
    try:
        dataset, ds_cfg = build_fit_dataset(view, with_labels=True)
    except (FileNotFoundError, AssertionError) as e:  # mmseg asserts on a missing ann_file
        raise FileNotFoundError(f'the labelled train split for --labeled is missing ({e}); '
                                'prepare it or pass --labeled-split test --allow-test-labels'
                                ) from e
    if n_images > len(dataset):
        raise ValueError(f'--labeled {n_images} exceeds the {len(dataset)} images of the train '
                         f'split ({ds_cfg.get("ann_file") or ds_cfg.get("data_prefix")})')
    vfm_rows, clip_rows, labels = [], [], []
    with torch.no_grad():
        for i in range(n_images):
            image01, label, _ = preprocess_item(seg, dataset[i])
            if label is None:
                raise ValueError(f'train image {i} has no ground-truth mask; --labeled needs '
                                 'masks (the pipeline must contain LoadAnnotations)')
            f = extract_image_features(seg, vfm, image01, label)
            keep = f['label'] >= 0
            vfm_rows.append(f['vfm'][keep].float().cpu())
            clip_rows.append(f['clip'][keep].float().cpu())
            labels.append(f['label'][keep].cpu())
    if not labels or sum(int(t.numel()) for t in labels) == 0:
        raise ValueError(f'the first {n_images} train image(s) have no labelled patch (all '
                         'void?); raise --labeled')
    info = dict(split='train', type=ds_cfg.get('type'), data_root=ds_cfg.get('data_root'),
                ann_file=ds_cfg.get('ann_file'), data_prefix=ds_cfg.get('data_prefix'),
                n_images=int(n_images))
    return torch.cat(vfm_rows), torch.cat(clip_rows), torch.cat(labels), info


def labeled_meta(split: str, info: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Metadata recorded in the artifact about the labelled split (and its warning)."""
    if split == 'test':
        return dict(labeled_split=dict(split='test'), warnings=[TEST_LABELS_WARNING])
    return dict(labeled_split=info or dict(split=split))
