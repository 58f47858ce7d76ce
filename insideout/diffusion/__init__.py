"""Part 5: from noise to images. Generated shape images with captions and a judge (``data``, ``judge``), metrics
(``metrics``), probability paths and samplers (``paths``, ``sampling``), the networks (``unet``, ``dit``, ``text``,
``vae``, ``toy``), and their training and evaluation (``train``, ``pipeline``)."""
