"""Upload-triggered image segmentation: the Cloud Function's package (entry point in main.py).

Modules: settings (environment), errors (ack vs. redeliver), events (notification parsing),
imaging (decode/validate/preprocess, mask PNG), model (manifest, LiteRT interpreter),
storage (Cloud Storage edge, output naming, generation rules), pipeline (orchestration),
logs (structured JSON lines for Cloud Logging).
"""
