"""Object stores for model files: ``file`` (a path, local or shared)."""
