"""One router per concern: predict (one image and batches), explain, service (health, ready,
model card), admin, metrics, and the API's own docs pages. serving.app includes them all."""
