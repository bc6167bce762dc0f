"""spritequeue: a job queue service for pixel-art sprite generation."""
