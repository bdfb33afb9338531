"""Train, convert, evaluate and publish the segmentation U-Net.

See README.md and docs/architecture.md.
"""
