"""Train, convert, evaluate and publish the segmentation U-Net (see README.md and DESIGN.md)."""
