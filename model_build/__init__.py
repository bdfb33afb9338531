"""Train, convert, evaluate and publish the segmentation U-Net (see README.md and docs/architecture.md)."""
