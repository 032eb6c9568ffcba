"""A1111's `modules.launch_utils`: the same helpers as the top-level `launch` module (newer extensions import
them from here)."""
try:
    import launch as _launch
except ImportError:  # imported as webui.extensions.a1111.modules.launch_utils, without the compat folder on sys.path
    from webui.extensions.a1111 import launch as _launch

args = _launch.args
python = _launch.python
git = _launch.git
index_url = _launch.index_url
dir_repos = _launch.dir_repos
is_installed = _launch.is_installed
run = _launch.run
run_pip = _launch.run_pip
commit_hash = _launch.commit_hash
git_tag = _launch.git_tag
repo_dir = _launch.repo_dir
check_run_python = _launch.check_run_python
git_clone = _launch.git_clone
requirements_met = _launch.requirements_met
