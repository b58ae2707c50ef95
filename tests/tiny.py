"""What many tests share: the train.py options of a tiny UNet that trains in about a second an epoch on the CPU."""

# ensemble.py sets --resize and --input-size itself (per mode)
TINY_MODEL = ["--basenet", "unet", "--encoder-width", "4", "--decoder-channels", "8", "--center-channels", "16",
              "--input-upsample", "1", "--oc", "center", "--batch-size", "8", "--dataload-workers-nums", "0",
              "--device", "cpu", "--warmup-epochs", "1", "--threads", "1"]
TINY = TINY_MODEL[:12] + ["--resize", "--input-size", "32"] + TINY_MODEL[12:]
