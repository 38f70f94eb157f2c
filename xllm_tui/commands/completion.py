"""`xllm-tui completion bash|zsh`: a shell completion script, generated from the same argparse parsers the
commands use (so it never drifts from them): subcommands, their options, option values with choices,
profile paths (*.yaml, *.yml), example names, rank numbers for --rank/--ranks, toggle groups for `toggle`.

Rank numbers come from `xllm-tui completion ranks PROFILE [--simulate] [--run-dir DIR]`: the supervisor's state
file in the run directory when there is one (no socket round trip), else the profile's ranks; toggle groups
from `xllm-tui completion toggles PROFILE`. Install with e.g.
  xllm-tui completion bash > ~/.local/share/bash-completion/completions/xllm-tui
  xllm-tui completion zsh > "${fpath[1]}/_xllm-tui"
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field

# Kinds of word a position can take; the shell functions below complete each kind.
PROFILE, FILE, DIR, RANK, TOGGLE, NONE = "profile", "file", "dir", "rank", "toggle", "none"
TUI = "_tui"  # `xllm-tui PROFILE [options]`: no subcommand word


@dataclass
class CommandSpec:
    options: list[str] = field(default_factory=list)
    value_kinds: dict[str, str] = field(default_factory=dict)  # option taking a value -> kind or "words:a b"
    positionals: list[str] = field(default_factory=list)
    repeat_last: bool = False  # the last positional takes many words (validate PROFILE...)


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("shell", choices=["bash", "zsh", "ranks", "toggles"],
                        help="print the script for this shell (`ranks|toggles PROFILE` is what the scripts call)")
    parser.add_argument("profile", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--simulate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)


def _option_kind(action: argparse.Action) -> str:
    if action.choices:
        return "words:" + " ".join(map(str, action.choices))
    dest, metavar = action.dest, str(action.metavar or "")
    if dest in ("rank", "ranks"):
        return RANK
    if dest in ("run_dir", "model", "draft_model") or metavar == "DIR":
        return DIR
    if dest in ("output", "binary", "npu_smi", "nvidia_smi") or metavar in ("PATH", "FILE"):
        return FILE
    return NONE


def _positional_kind(action: argparse.Action, command: str) -> str:
    if action.help == argparse.SUPPRESS:
        return NONE
    if action.choices:
        return "words:" + " ".join(c for c in map(str, action.choices) if c not in ("ranks", "toggles"))
    if action.dest in ("profile", "profiles"):
        return PROFILE
    if command == "toggle" and action.dest == "group":
        return TOGGLE
    if command == "examples":
        from xllm_tui.examples import list_examples

        return "words:" + " ".join(e.name for e in list_examples()) if action.dest == "name" else FILE
    return NONE


def command_specs() -> dict[str, CommandSpec]:
    from xllm_tui import cli

    parsers = {name: cli._command_parser(name) for name, (_m, help_text) in cli.COMMANDS.items()
               if help_text != argparse.SUPPRESS}
    tui = argparse.ArgumentParser()
    from xllm_tui.commands import tui as tui_command

    tui_command.add_arguments(tui, "tui")
    parsers[TUI] = tui
    specs = {}
    for name, parser in parsers.items():
        spec = specs[name] = CommandSpec()
        for action in parser._actions:
            if action.option_strings:
                if action.help == argparse.SUPPRESS:
                    continue
                spec.options += [o for o in action.option_strings if o.startswith("--") or o in ("-h", "-f", "-n", "-o")]
                if action.nargs != 0:
                    for option in action.option_strings:
                        spec.value_kinds[option] = _option_kind(action)
            else:
                spec.positionals.append(_positional_kind(action, name))
                spec.repeat_last = action.nargs in ("+", "*")
    return specs


def _quote(words: list[str]) -> str:
    return " ".join(words)


def _case_lines(specs: dict[str, CommandSpec], *, options: str, value: str, positional: str,
                rest: str) -> tuple[list[str], list[str], list[str]]:
    """The shell `case` arms for each command's options, option values and positionals, in one shell's syntax."""
    option_cases, value_cases, positional_cases = [], [], []
    for name, spec in specs.items():
        option_cases.append(options.format(name=name, options=_quote(spec.options)))
        for option, kind in spec.value_kinds.items():
            value_cases.append(value.format(name=name, key=option, kind=kind))
        for index, kind in enumerate(spec.positionals):
            positional_cases.append(positional.format(name=name, key=index, kind=kind))
        if spec.repeat_last and spec.positionals:
            positional_cases.append(rest.format(name=name, kind=spec.positionals[-1]))
    return option_cases, value_cases, positional_cases


def bash_script(specs: dict[str, CommandSpec]) -> str:
    commands = [n for n in specs if n != TUI]
    option_cases, value_cases, positional_cases = _case_lines(
        specs, options='        {name}) echo "{options}" ;;', value='        "{name} {key}") echo "{kind}" ;;',
        positional='        "{name} {key}") echo "{kind}" ;;', rest='        "{name} "*) echo "{kind}" ;;')
    nl = "\n"
    return f"""# bash completion for xllm-tui (generated by `xllm-tui completion bash`)
_xllm_tui_options() {{
    case "$1" in
{nl.join(option_cases)}
    esac
}}
_xllm_tui_value_kind() {{
    case "$1 $2" in
{nl.join(value_cases)}
    esac
}}
_xllm_tui_positional_kind() {{
    case "$1 $2" in
{nl.join(positional_cases)}
    esac
}}
_xllm_tui_add() {{
    local word
    while IFS= read -r word; do [[ -n $word ]] && COMPREPLY+=("$word"); done < <(compgen "$@")
}}
_xllm_tui_complete_kind() {{
    local kind=$1 cur=$2 word profile="" simulate="" i
    case "$kind" in
        profile)
            compopt -o filenames 2>/dev/null
            _xllm_tui_add -d -- "$cur"
            while IFS= read -r word; do
                [[ $word == *.yaml || $word == *.yml ]] && COMPREPLY+=("$word")
            done < <(compgen -f -- "$cur") ;;
        file) compopt -o filenames 2>/dev/null; _xllm_tui_add -f -- "$cur" ;;
        dir) compopt -o filenames 2>/dev/null; _xllm_tui_add -d -- "$cur" ;;
        words:*) _xllm_tui_add -W "${{kind#words:}}" -- "$cur" ;;
        rank|toggle)
            local run_dir=()
            for ((i = 1; i < COMP_CWORD; i++)); do
                word=${{COMP_WORDS[i]}}
                [[ $word == --simulate ]] && simulate=--simulate
                [[ $word == --run-dir ]] && run_dir=(--run-dir "${{COMP_WORDS[i+1]}}")
                [[ -z $profile && ( $word == *.yaml || $word == *.yml ) ]] && profile=$word
            done
            [[ -z $profile ]] && return
            local prefix=""  # --ranks 0,3,<tab>: complete the last number of the list
            [[ $cur == *,* ]] && prefix=${{cur%,*}}, && cur=${{cur##*,}}
            while IFS= read -r word; do
                [[ -n $word ]] && COMPREPLY+=("$prefix$word")
            done < <(compgen -W "$("${{COMP_WORDS[0]}}" completion "${{kind}}s" "$profile" $simulate "${{run_dir[@]}}" 2>/dev/null)" -- "$cur") ;;
    esac
}}
_xllm_tui() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}} cmd=${{COMP_WORDS[1]}} kind word i n=0 start=2
    COMPREPLY=()
    if ((COMP_CWORD == 1)); then
        if [[ $cur == -* ]]; then
            _xllm_tui_add -W "--help --version" -- "$cur"
        else
            _xllm_tui_add -W "{_quote(commands)}" -- "$cur"
            _xllm_tui_complete_kind profile "$cur"
        fi
        return 0
    fi
    case " {_quote(commands)} " in
        *" $cmd "*) ;;
        *) cmd={TUI}; start=1 ;;
    esac
    kind=$(_xllm_tui_value_kind "$cmd" "$prev")
    if [[ -n $kind ]]; then
        _xllm_tui_complete_kind "$kind" "$cur"
        return 0
    fi
    if [[ $cur == -* ]]; then
        _xllm_tui_add -W "$(_xllm_tui_options "$cmd")" -- "$cur"
        return 0
    fi
    for ((i = start; i < COMP_CWORD; i++)); do
        word=${{COMP_WORDS[i]}}
        if [[ $word == -* ]]; then
            [[ -n $(_xllm_tui_value_kind "$cmd" "$word") ]] && ((i++))
        else
            ((n++))
        fi
    done
    kind=$(_xllm_tui_positional_kind "$cmd" "$n")
    [[ -n $kind ]] && _xllm_tui_complete_kind "$kind" "$cur"
    return 0
}}
complete -F _xllm_tui xllm-tui
"""


def zsh_script(specs: dict[str, CommandSpec]) -> str:
    commands = [n for n in specs if n != TUI]
    option_cases, value_cases, positional_cases = _case_lines(
        specs, options="        {name}) reply=({options}) ;;", value="        '{name} {key}') REPLY='{kind}' ;;",
        positional="        '{name} {key}') REPLY='{kind}' ;;", rest="        '{name} '*) REPLY='{kind}' ;;")
    nl = "\n"
    return f"""#compdef xllm-tui
# zsh completion for xllm-tui (generated by `xllm-tui completion zsh`): put it in a directory of $fpath as
# _xllm-tui, or source it after compinit.
_xllm_tui_options() {{
    reply=()
    case $1 in
{nl.join(option_cases)}
    esac
}}
_xllm_tui_value_kind() {{
    REPLY=''
    case "$1 $2" in
{nl.join(value_cases)}
    esac
}}
_xllm_tui_positional_kind() {{
    REPLY=''
    case "$1 $2" in
{nl.join(positional_cases)}
    esac
}}
_xllm_tui_complete_kind() {{
    local kind=$1 word profile='' simulate='' i
    case $kind in
        profile) _files -g '*.(yaml|yml)' ;;
        file) _files ;;
        dir) _files -/ ;;
        words:*) compadd -- ${{=kind#words:}} ;;
        rank|toggle)
            local -a run_dir
            for (( i = 2; i < CURRENT; i++ )); do
                word=${{words[i]}}
                [[ $word == --simulate ]] && simulate=--simulate
                [[ $word == --run-dir ]] && run_dir=(--run-dir ${{words[i+1]}})
                [[ -z $profile && ( $word == *.yaml || $word == *.yml ) ]] && profile=$word
            done
            [[ -z $profile ]] && return
            compset -P '*,'  # --ranks 0,3,<tab>: complete the last number of the list
            compadd -- ${{(f)"$(${{words[1]}} completion ${{kind}}s $profile $simulate $run_dir 2>/dev/null)"}} ;;
    esac
}}
_xllm_tui() {{
    local cmd=${{words[2]}} cur=${{words[CURRENT]}} prev=${{words[CURRENT-1]}} word REPLY i n=0 start=3
    local -a reply
    if (( CURRENT == 2 )); then
        if [[ $cur == -* ]]; then
            compadd -- --help --version
        else
            compadd -- {_quote(commands)}
            _files -g '*.(yaml|yml)'
        fi
        return
    fi
    if [[ " {_quote(commands)} " != *" $cmd "* ]]; then
        cmd={TUI}; start=2
    fi
    _xllm_tui_value_kind $cmd $prev
    if [[ -n $REPLY ]]; then
        _xllm_tui_complete_kind $REPLY
        return
    fi
    if [[ $cur == -* ]]; then
        _xllm_tui_options $cmd
        compadd -- $reply
        return
    fi
    for (( i = start; i < CURRENT; i++ )); do
        word=${{words[i]}}
        if [[ $word == -* ]]; then
            _xllm_tui_value_kind $cmd $word
            [[ -n $REPLY ]] && (( i++ ))
        else
            (( n++ ))
        fi
    done
    _xllm_tui_positional_kind $cmd $n
    [[ -n $REPLY ]] && _xllm_tui_complete_kind $REPLY
}}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _xllm_tui "$@"
else
    compdef _xllm_tui xllm-tui
fi
"""


def _profile(profile_path: str, simulate: bool):
    from xllm_tui.profile import load_profile

    # A real profile whose binary is not installed here still names its ranks: the simulate load accepts it.
    return load_profile(profile_path, simulate=simulate).profile or load_profile(profile_path, simulate=True).profile


def toggle_names(profile_path: str, simulate: bool) -> list[str]:
    profile = _profile(profile_path, simulate)
    return [t.name for t in profile.toggles] if profile is not None else []


def rank_numbers(profile_path: str, simulate: bool, run_dir: str | None = None) -> list[int]:
    """Ranks of the supervisor's last state file for this profile, else the profile's ranks; [] if unknown."""
    from xllm_tui.client import run_dir_for
    from xllm_tui.supervisor.state import STATE_NAME

    profile = _profile(profile_path, simulate)
    if profile is None:
        return []
    state_path = os.path.join(run_dir or run_dir_for(profile, simulate), STATE_NAME)
    try:
        with open(state_path, encoding="utf-8") as f:
            ranks = [int(r["rank"]) for r in json.load(f).get("ranks") or []]
        if ranks:
            return ranks
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return list(range(profile.nnodes))


def run(args: argparse.Namespace) -> int:
    if args.shell in ("ranks", "toggles"):
        if not args.profile:
            print(f"xllm-tui completion {args.shell}: give a PROFILE", file=sys.stderr)
            return 2
        words = rank_numbers(args.profile, args.simulate, args.run_dir) if args.shell == "ranks" else \
            toggle_names(args.profile, args.simulate)
        print("\n".join(map(str, words)))
        return 0
    specs = command_specs()
    sys.stdout.write(bash_script(specs) if args.shell == "bash" else zsh_script(specs))
    return 0
