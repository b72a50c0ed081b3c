"""imgurd: re-upload images from their URLs to Imgur, in the background."""

__version__ = "0.1.0"
USER_AGENT = "imgurd/" + __version__
