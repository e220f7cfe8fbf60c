# Training-free CLIP baseline (no VFM, no alignment).  Schema: docs/ARCHITECTURE.md.
# Method configs set clip_mode, class_names and the per-dataset thresholds.
model = dict(
    type='GPUASegmentor',
    # images reach the model as RGB floats in 0..255; the encoders normalise themselves
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[0., 0., 0.], std=[1., 1., 1.],
                           bgr_to_rgb=True, pad_val=0, seg_pad_val=255),
    clip=dict(name='ViT-B-16', pretrained='openai'),
    clip_mode='vanilla',
    clip_mode_cfg=dict(),
    class_names='voc21',
    templates='openai_imagenet',
    slide_crop=224, slide_stride=112, crop_batch_size=32,
    # 'auto': the class named background / bg / other / void, if the vocabulary has one, else
    # none (prob_thd must then be 0); a dataset whose background class has another name (VOC21's
    # is a list of background words) sets bg_idx=0 in its method config.
    logit_scale=40.0, prob_thd=0.0, area_thd=None, bg_idx='auto',
    pamr_steps=0, pamr_dilations=(8, 16),
    autocast_dtype=None,
    # GPUA configs add vfm=dict(...) and decode_head=dict(type='GPUAHead', ...)
)
