"""`medmix demo`: ask a trained checkpoint about an image, in the browser (Gradio)."""
