"""Building open_clip models and loading their weights (no network except for open_clip tags).

``pretrained`` may be

* ``None``: random initialisation (tests, smoke runs);
* an open_clip tag (``'openai'``, ``'laion2b_s34b_b88k'`` ...): handed to
  ``open_clip.create_model`` unchanged; QuickGELU is switched on when the tag was trained with it
  (``'openai'``), which open_clip itself only warns about;
* a local file: open_clip format (``.safetensors`` / ``.pt`` / ``.bin``, optionally wrapped in
  ``{'state_dict': ...}`` and/or prefixed ``module.``), OpenAI's plain state dict, or OpenAI's
  TorchScript archive (``ViT-B-16.pt``; its state dict is read on CPU, the code in it never runs).
  OpenAI's key layout is open_clip's, so one loader serves all of them.

QuickGELU: OpenAI weights need it.  ``quick_gelu=None`` (default) means "automatic": on for
``-quickgelu`` model names, the ``'openai'`` tag, TorchScript archives and files in OpenAI's
layout (:func:`is_openai_layout`: OpenAI's ``input_resolution`` / ``context_length`` /
``vocab_size`` entries, or its mixed precision: fp16 matrices with fp32 LayerNorms and
embeddings, as ``clip.model.convert_weights`` leaves them).  A file in neither layout gets GELU;
an all-fp16 file cannot be told apart and gets GELU with a warning.

``model_cfg`` builds an architecture that open_clip has no name for (used by the tests for tiny
random CLIPs); see :func:`tiny_clip_model_cfg`.
"""
import copy
import logging
import os
import os.path as osp
import zipfile
from typing import Any, Dict, Optional, Tuple

import torch

logger = logging.getLogger(__name__)

# OpenAI's TorchScript state dict carries these scalars next to the weights.
_OPENAI_JIT_EXTRA_KEYS = ('input_resolution', 'context_length', 'vocab_size')


def tiny_clip_model_cfg(image_size: int = 32, patch_size: int = 16, width: int = 64,
                        layers: int = 3, heads: int = 4, embed_dim: int = 32,
                        text_width: int = 64, text_layers: int = 2, text_heads: int = 4,
                        context_length: int = 77, quick_gelu: bool = True) -> Dict[str, Any]:
    """An open_clip ``CLIP`` config for a tiny random ViT (tests only; builds in milliseconds).

    Use as ``build_clip_encoder(dict(name='tiny', pretrained=None, model_cfg=tiny_clip_model_cfg()))``.
    ``image_size`` is the native resolution (pixels) of the positional embedding; other sizes are
    handled by interpolation.  ``vocab_size`` stays 49408 so open_clip's tokenizer works.
    """
    return dict(
        embed_dim=embed_dim,
        quick_gelu=quick_gelu,
        vision_cfg=dict(image_size=image_size, patch_size=patch_size, width=width, layers=layers,
                        head_width=width // heads),
        text_cfg=dict(context_length=context_length, vocab_size=49408, width=text_width,
                      heads=text_heads, layers=text_layers),
    )


def is_torchscript_archive(path: str) -> bool:
    """True when ``path`` is a TorchScript zip (as OpenAI's released ``.pt`` files are)."""
    from ...checkpoint import is_torchscript_archive as _is_ts
    return _is_ts(path)


# ------------------------------------------------------------------ TorchScript, no code run
_STORAGE_DTYPES = {
    'FloatStorage': torch.float32, 'HalfStorage': torch.float16, 'BFloat16Storage': torch.bfloat16,
    'DoubleStorage': torch.float64, 'LongStorage': torch.int64, 'IntStorage': torch.int32,
    'ShortStorage': torch.int16, 'CharStorage': torch.int8, 'ByteStorage': torch.uint8,
    'BoolStorage': torch.bool}


class _ScriptObject:
    """Stands in for a TorchScript module object of ``data.pkl``: its attributes, nothing else
    (no method, no code: the archive's ``code/`` is only parsed for the attribute lists)."""
    qualname = '__torch__'

    def __setstate__(self, state):
        self.attrs = state if isinstance(state, dict) else {}


class _StorageType:
    def __init__(self, dtype):
        self.dtype = dtype


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    """``torch._utils._rebuild_tensor_v2`` restricted to what a state dict needs (requires_grad,
    hooks and metadata are dropped)."""
    if not isinstance(storage, _TypedBytes):
        raise ValueError('a tensor without an archive storage')
    return torch.empty((0,), dtype=storage.dtype).set_(storage.untyped, storage_offset,
                                                       tuple(size), tuple(stride))


def _script_state_lists(zf, prefix: str, qualname: str) -> Optional[Tuple[list, list]]:
    """``(__parameters__, __buffers__)`` of a TorchScript class, read by *parsing* (never
    executing) its source in the archive's ``code/`` folder; None when not found."""
    import ast
    module, _, cls = qualname.rpartition('.')
    try:
        src = zf.read(f'{prefix}code/{module.replace(".", "/")}.py').decode('utf-8')
        tree = ast.parse(src)
    except (KeyError, UnicodeDecodeError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            lists = {}
            for stmt in node.body:
                if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(
                        stmt.targets[0], ast.Name) and stmt.targets[0].id in (
                        '__parameters__', '__buffers__'):
                    try:
                        lists[stmt.targets[0].id] = list(ast.literal_eval(stmt.value))
                    except ValueError:
                        return None
            return lists.get('__parameters__', []), lists.get('__buffers__', [])
    return None


def read_torchscript_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """The state dict of a TorchScript archive, read without running any of its code.

    ``torch.jit.load`` compiles and runs the archive's code (and its ``data.pkl`` may name any
    Python global).  Here ``data.pkl`` is unpickled with an allowlist: TorchScript object
    placeholders (:class:`_ScriptObject`), tensor rebuilding from the archive's own storages,
    ``OrderedDict`` and storage dtypes; anything else is refused.  Which attributes are
    parameters / buffers comes from parsing (``ast``, not executing) the class sources.

    Raises:
        ValueError: not a readable TorchScript archive, or one that needs another global
            (possibly malicious); the message names the file.
    """
    import io
    import pickle

    def refuse(why):
        return ValueError(f'CLIP checkpoint {path!r} looks like a TorchScript archive but {why}; '
                          'it was not loaded (nothing in it was run). Use the original OpenAI '
                          'file, or an open_clip .safetensors / state-dict file')

    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise refuse(f'is not a readable zip ({e})') from None
    with zf:
        pkls = [n for n in zf.namelist() if n == 'data.pkl' or n.endswith('/data.pkl')]
        if not pkls:
            raise refuse('has no data.pkl')
        prefix = min(pkls, key=len)[:-len('data.pkl')]
        classes: Dict[str, type] = {}

        class Unpickler(pickle.Unpickler):
            def find_class(self, module, name):
                if module == '__torch__' or module.startswith('__torch__.'):
                    qual = f'{module}.{name}'
                    if qual not in classes:
                        classes[qual] = type(name, (_ScriptObject,), dict(qualname=qual))
                    return classes[qual]
                if module == 'torch._utils' and name in ('_rebuild_tensor_v2',
                                                         '_rebuild_tensor'):
                    return _rebuild_tensor
                if module == 'collections' and name == 'OrderedDict':
                    import collections
                    return collections.OrderedDict
                if module == 'torch' and name in _STORAGE_DTYPES:
                    return _StorageType(_STORAGE_DTYPES[name])
                raise pickle.UnpicklingError(f'refused global {module}.{name}')

            def persistent_load(self, pid):
                if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == 'storage'
                        and isinstance(pid[1], _StorageType)):
                    raise pickle.UnpicklingError(f'unexpected persistent id {pid!r}')
                raw = zf.read(f'{prefix}data/{pid[2]}')
                data = (torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw
                        else torch.empty((0,), dtype=torch.uint8))
                return _TypedBytes(data.untyped_storage(), pid[1].dtype)

        try:
            root = Unpickler(io.BytesIO(zf.read(f'{prefix}data.pkl'))).load()
        except Exception as e:  # noqa: BLE001  (UnpicklingError, KeyError, EOFError, ...)
            raise refuse(f'its data.pkl cannot be read safely ({type(e).__name__}: {e})') from None
        if not isinstance(root, _ScriptObject):
            raise refuse(f'its data.pkl holds a {type(root).__name__}, not a module')
        sd: Dict[str, torch.Tensor] = {}

        def walk(obj, pre):
            attrs = getattr(obj, 'attrs', {})
            lists = _script_state_lists(zf, prefix, obj.qualname)
            names = (lists[0] + lists[1]) if lists is not None else [
                k for k, v in attrs.items() if isinstance(v, torch.Tensor)]
            for k in names:
                if isinstance(attrs.get(k), torch.Tensor):
                    sd[pre + k] = attrs[k]
            for k, v in attrs.items():
                if isinstance(v, _ScriptObject):
                    walk(v, f'{pre}{k}.')
        walk(root, '')
    if not sd:
        raise refuse('it holds no tensors')
    return sd


class _TypedBytes:
    """An untyped storage with the dtype the pickle named (what :func:`_rebuild_tensor` needs)."""

    def __init__(self, untyped, dtype):
        self.untyped, self.dtype = untyped, dtype


def is_openai_layout(sd: Dict[str, torch.Tensor]) -> Optional[bool]:
    """True: an OpenAI release (QuickGELU); False: open_clip's own; None: cannot tell.

    OpenAI's state dicts carry ``input_resolution`` / ``context_length`` / ``vocab_size``, and
    ``convert_weights`` halves only conv / linear / attention matrices and the projections,
    leaving LayerNorms and embeddings in fp32.  open_clip writes one dtype throughout.
    """
    if any(k in sd for k in _OPENAI_JIT_EXTRA_KEYS):
        return True
    conv, ln = sd.get('visual.conv1.weight'), sd.get('visual.ln_pre.weight')
    if conv is None or ln is None:
        return False
    if conv.dtype == torch.float16 and ln.dtype == torch.float32:
        return True
    if conv.dtype == ln.dtype == torch.float16:
        return None
    return False


def read_state_dict(path: str) -> Tuple[Dict[str, torch.Tensor], str]:
    """Read a checkpoint on CPU -> (state dict in open_clip key layout, format name).

    Format name is one of ``'torchscript'``, ``'safetensors'``, ``'torch'``.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'CLIP checkpoint {path!r} does not exist (pretrained=...); give an '
                                'existing file, an open_clip tag such as "openai", or None')
    if is_torchscript_archive(path):
        # Only the tensors are read; the archive's code is never compiled nor run.
        sd = read_torchscript_state_dict(path)
        for k in _OPENAI_JIT_EXTRA_KEYS:
            sd.pop(k, None)
        return sd, 'torchscript'
    from ...checkpoint import is_safetensors_file, load_checkpoint_file
    fmt = 'safetensors' if is_safetensors_file(path) or path.endswith('.safetensors') else 'torch'
    try:
        # the one safe reader: safetensors, or torch.load(weights_only=True) on a torch that
        # has no known bypass of it
        ckpt = load_checkpoint_file(path, 'cpu')
    except ValueError as e:  # CheckpointError: corrupt, truncated, not torch, needs code
        raise ValueError(f'could not read CLIP checkpoint {path!r}: {e}') from None
    if isinstance(ckpt, dict) and isinstance(ckpt.get('state_dict'), dict):
        ckpt = ckpt['state_dict']
    if not isinstance(ckpt, dict) or not ckpt:
        raise ValueError(f'CLIP checkpoint {path!r} holds no state dict (got {type(ckpt).__name__})')
    if all(k.startswith('module.') for k in ckpt):
        ckpt = {k[len('module.'):]: v for k, v in ckpt.items()}
    return ckpt, fmt


def _instantiate(name: str, model_cfg: Optional[dict], quick_gelu: Optional[bool]):
    import open_clip
    from open_clip.model import CLIP
    if model_cfg is None:
        cfg = open_clip.get_model_config(name)
        if cfg is None:
            raise ValueError(f'unknown open_clip model name {name!r}; pass model_cfg=dict(...) for a '
                             f'custom architecture or one of open_clip.list_models(), e.g. ViT-B-16')
        cfg = copy.deepcopy(cfg)
    else:
        cfg = copy.deepcopy(dict(model_cfg))
    if quick_gelu is not None:
        cfg['quick_gelu'] = bool(quick_gelu)
    for key in ('custom_text', 'multimodal_cfg'):
        if cfg.get(key):
            raise ValueError(f'open_clip model {name!r} uses {key!r}; only plain CLIP ViTs are supported')
    if 'timm_model_name' in cfg.get('vision_cfg', {}):
        raise ValueError(f'open_clip model {name!r} has a timm vision tower; only open_clip ViTs '
                         'are supported')
    return CLIP(**cfg), cfg


def _tag_cfg(name: str, pretrained: str) -> dict:
    import open_clip
    return open_clip.get_pretrained_cfg(name, pretrained) or {}


def create_open_clip(name: str = 'ViT-B-16', pretrained: Optional[str] = None,
                     model_cfg: Optional[dict] = None, quick_gelu: Optional[bool] = None,
                     cache_dir: Optional[str] = None):
    """Build an unmodified open_clip ``CLIP`` (fp32, CPU, eval mode) -> (model, info dict).

    ``info`` holds ``name``, ``pretrained``, ``format`` (``None``/``'tag'``/``'torchscript'``/
    ``'safetensors'``/``'torch'``), ``quick_gelu`` and ``mean``/``std`` (tuples, 0..1 images).
    """
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    mean, std = OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    fmt = None
    if pretrained is None:
        model, cfg = _instantiate(name, model_cfg, quick_gelu)
    elif not isinstance(pretrained, str):
        raise ValueError(f'pretrained must be None, an open_clip tag or a file path, got {pretrained!r}')
    elif model_cfg is None and _tag_cfg(name, pretrained):
        tag = _tag_cfg(name, pretrained)
        qg = tag.get('quick_gelu', False) if quick_gelu is None else quick_gelu
        model = open_clip.create_model(name, pretrained=pretrained, force_quick_gelu=bool(qg),
                                       cache_dir=cache_dir)
        cfg = dict(quick_gelu=bool(qg) or bool((open_clip.get_model_config(name) or {})
                                               .get('quick_gelu', False)))
        mean, std = tag.get('mean', mean), tag.get('std', std)
        fmt = 'tag'
    else:
        path = osp.expanduser(pretrained)
        if not osp.isfile(path):
            tags = [] if model_cfg is not None else open_clip.list_pretrained_tags_by_model(name)
            raise FileNotFoundError(
                f'pretrained={pretrained!r} for CLIP model {name!r} is neither an existing file nor '
                f'a known open_clip tag (known tags: {tags})')
        sd, fmt = read_state_dict(path)
        layout = True if fmt == 'torchscript' else is_openai_layout(sd)
        for k in _OPENAI_JIT_EXTRA_KEYS:
            sd.pop(k, None)
        if quick_gelu is None and layout:
            # only OpenAI publishes TorchScript / mixed-precision CLIPs, all trained with QuickGELU
            quick_gelu = True
            logger.info('CLIP checkpoint %s is in OpenAI\'s layout: QuickGELU switched on', path)
        elif quick_gelu is None and layout is None:
            logger.warning('CLIP checkpoint %s is all fp16: cannot tell OpenAI weights (QuickGELU) '
                           'from open_clip ones (GELU); using the model config\'s activation. Pass '
                           'clip.quick_gelu=True/False to decide.', path)
        elif quick_gelu is False and layout:
            logger.warning('CLIP checkpoint %s is in OpenAI\'s layout (trained with QuickGELU) but '
                           'quick_gelu=False was given; features will be off', path)
        model, cfg = _instantiate(name, model_cfg, quick_gelu)
        _load_into(model, sd, path, name)
    model.eval()
    info = dict(name=name, pretrained=pretrained, format=fmt, mean=tuple(mean), std=tuple(std),
                quick_gelu=bool(cfg.get('quick_gelu', False)))
    logger.info('CLIP %s (pretrained=%s, format=%s, quick_gelu=%s)', name, pretrained, fmt,
                info['quick_gelu'])
    return model, info


def _load_into(model, sd: Dict[str, torch.Tensor], path: str, name: str) -> None:
    from open_clip.factory import resize_pos_embed, resize_text_pos_embed
    own = model.state_dict()
    sd = dict(sd)
    if 'logit_scale' in sd and sd['logit_scale'].ndim != own['logit_scale'].ndim:
        sd['logit_scale'] = sd['logit_scale'].reshape(own['logit_scale'].shape)
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [f'{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}'
              for k in own if k in sd and sd[k].shape != own[k].shape
              and k not in ('visual.positional_embedding', 'positional_embedding')]
    if missing or unexpected or shapes:
        def head(xs):
            return ', '.join(xs[:5]) + (f' ... ({len(xs)} in all)' if len(xs) > 5 else '')
        raise ValueError(
            f'CLIP checkpoint {path!r} does not match the expected model {name!r}: '
            + '; '.join(s for s in (f'missing keys [{head(missing)}]' if missing else '',
                                    f'unexpected keys [{head(unexpected)}]' if unexpected else '',
                                    f'shape mismatches [{head(shapes)}]' if shapes else '') if s)
            + '. Check the model name (e.g. ViT-B-16 vs ViT-L-14) or the model_cfg.')
    # A checkpoint trained at another resolution is resized the way open_clip does it.
    resize_pos_embed(sd, model)
    resize_text_pos_embed(sd, model)
    model.load_state_dict(sd, strict=True)
