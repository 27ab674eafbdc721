"""Deployment of SkinDX: the process stack (`make serve`, stack.py) and the container helpers
(image.py); the compose file, the Dockerfiles and nginx's templates sit beside this package."""
