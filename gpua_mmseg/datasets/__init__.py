"""MMSeg-facing datasets.  Importing this module registers them with MMSeg's registries."""
from .._mmcv_compat import install_mmcv_ext_placeholder

install_mmcv_ext_placeholder()

from .benchmarks import (GPUACOCOObjectDataset, GPUAPascalContext59Dataset,  # noqa: E402
                         GPUAPascalContext60Dataset, GPUAPascalVOC20Dataset)
from .class_check import GPUAClassNamesCheckHook, check_class_names  # noqa: E402
from .names import (NUM_CLASSES, class_names_path, list_class_name_keys,  # noqa: E402
                    load_class_names)

__all__ = [
    'GPUAPascalVOC20Dataset', 'GPUAPascalContext60Dataset', 'GPUAPascalContext59Dataset',
    'GPUACOCOObjectDataset', 'NUM_CLASSES', 'class_names_path', 'list_class_name_keys',
    'load_class_names', 'GPUAClassNamesCheckHook', 'check_class_names',
]
