# Bash completion for tierfs: commands, subcommands and flags.
# The appliance installs it as /usr/share/bash-completion/completions/tierfs;
# from a checkout: source bin/completion.bash.  test/cli.test.ts checks it
# against every command's --help, so a flag added there must be added here.

_tierfs_flags() {
  case "$1" in
    format) echo --flash --meta --size --target --encryption-key --force ;;
    serve) echo --flash --meta --mount --config --target --encryption-key --admin-socket --cool-after --metrics --attr-timeout --metadata-rpo --lease-ttl --follow --follow-interval --writeback-cache --no-direct --flash-io --discard ;;
    promote) echo --meta --encryption-key --lease-ttl --wait --force ;;
    restore) echo --target --flash --meta --size --at --uuid --encryption-key --discard-later --list --json ;;
    firstboot) echo --conf --user-data --config --state --sys --mountinfo --dev ;;
    status | stat | heat | lost | followers) echo --json --socket ;;
    destage | recall) echo --wait --socket ;;
    release) echo --wait --json --socket ;;
    pin) echo --recursive --wait --socket ;;
    unpin) echo --recursive --socket ;;
    fsck) echo --repair --deep --sample-packs --json --socket ;;
    'policy add') echo --path --mode --cool-after --min-size --target --compress --durable --json --socket ;;
    'policy edit') echo --path --mode --cool-after --min-size --target --compress --no-compress --durable --json --socket ;;
    'policy list' | 'policy show' | 'policy explain') echo --json --socket ;;
    'policy rm' | 'target rm') echo --socket ;;
    'policy simulate') echo --flash-size --policy --replace --json --socket ;;
    'watermark set') echo --high --low --json --socket ;;
    'watermark show' | 'target list' | 'target test' | 'target add') echo --json --socket ;;
    'share add') echo --nfs --no-root-squash --smb --users --ro --allow-world --json --socket ;;
    'share edit') echo --path --nfs --no-nfs --root-squash --no-root-squash --smb --no-smb --users --ro --rw --allow-world --no-allow-world --json --socket ;;
    'share rm') echo --socket ;;
    'share list' | 'share show') echo --json --socket ;;
    'share user') echo --password-stdin --json --socket ;;
  esac
}

_tierfs_subcommands() {
  case "$1" in
    policy) echo add edit list show rm explain simulate ;;
    watermark) echo set show ;;
    target) echo list test add rm ;;
    share) echo add edit rm list show user ;;
  esac
}

_tierfs() {
  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
  local commands='format serve firstboot restore promote status stat heat destage recall release pin unpin policy fsck watermark target lost followers share'
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "$commands --help" -- "$cur"))
    return
  fi
  local command=${COMP_WORDS[1]} subcommands
  subcommands=$(_tierfs_subcommands "$command")
  if [ -n "$subcommands" ] && [ "$COMP_CWORD" -eq 2 ]; then
    COMPREPLY=($(compgen -W "$subcommands --help" -- "$cur"))
    return
  fi
  [ -n "$subcommands" ] && command="$command ${COMP_WORDS[2]}"
  case "$prev" in
    --mode) COMPREPLY=($(compgen -W 'auto pin all never' -- "$cur")); return ;;
    user) [ "$command" = 'share user' ] && COMPREPLY=($(compgen -W 'add rm list' -- "$cur")) && return ;;
    --flash | --meta | --mount | --config | --encryption-key | --admin-socket | --socket | --conf | --user-data | --state | --sys | --mountinfo | --dev)
      COMPREPLY=($(compgen -f -- "$cur")); return ;;
  esac
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$(_tierfs_flags "$command") --help" -- "$cur"))
  else
    COMPREPLY=($(compgen -f -- "$cur")) # paths in the mount
  fi
}

complete -o filenames -F _tierfs tierfs
