# Runtime for training-free evaluation with MMEngine's Runner (no checkpoint is loaded: the
# encoders' weights come from the model's own `clip` / `vfm` entries).
default_scope = 'mmseg'
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    # tools/test.py --show-dir switches drawing on
    visualization=dict(type='SegVisualizationHook', draw=False, interval=1),
)
# Distributed evaluation (tools/dist_test.sh): the encoders are frozen, and plain DDP refuses a
# module without trainable parameters; this wrapper only puts frozen submodules on the device.
model_wrapper_cfg = dict(type='MMSeparateDistributedDataParallel', broadcast_buffers=False,
                         find_unused_parameters=False)
# Before every test / val loop: the model's vocabulary must have as many classes as the dataset's
# METAINFO['classes'] (else an error), with matching names (else a warning); see
# gpua_mmseg/datasets/class_check.py.  Registered by `import gpua_mmseg.datasets` / `.models`.
custom_hooks = [dict(type='GPUAClassNamesCheckHook')]
