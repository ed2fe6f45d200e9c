"""Alert delivery: signing, the webhook sender group, and a local receiver."""
