// Executes Ollama Modelfile TEMPLATEs for a chat request with Go's own text/template, set up as Ollama's
// server sets it up (ollama/ollama template/template.go: Parse and Execute), for tests/ollama_go.py.
//
// stdin: a JSON list of {"template": TEMPLATE text, "messages": [{"role", "content"}]}, the messages
// being those the chat endpoint hands to the template (Modelfile MESSAGEs and SYSTEM already applied).
// stdout: a JSON list with {"out": prompt} or {"err": message} per case.
//
// Like Ollama: option missingkey=zero; the functions json, currentDate, yesterdayDate, toTypeScriptType;
// consecutive messages of one role (but tool) merged with "\n\n", every system text joined into .System;
// a struct per message with Ollama's template fields (a field it lacks is an error, as in Ollama).
// Only templates that use .Messages (Ollama's chat path) are executed; others are an error here.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
)

// message: the fields Ollama's templateMessage gives a template (no JSON tags there either: `json`
// prints them under these names); no images or tool calls in these requests, so those stay nil
type message struct {
	Role       string
	Content    string
	Thinking   string
	Images     []any
	ToolCalls  []any
	ToolName   string
	ToolCallID string
}

type request struct {
	Template string `json:"template"`
	Messages []struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"messages"`
}

var funcs = template.FuncMap{
	"json": func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	},
	"currentDate":      func(args ...string) string { return time.Now().Format("2006-01-02") },
	"yesterdayDate":    func(args ...string) string { return time.Now().AddDate(0, 0, -1).Format("2006-01-02") },
	"toTypeScriptType": func(v any) string { return "any" }, // no tools in these requests
}

// usesMessages: some field or variable in the template names Messages (Ollama's Vars/Identifiers check).
func usesMessages(n parse.Node) bool {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return false
		}
		for _, c := range n.Nodes {
			if usesMessages(c) {
				return true
			}
		}
	case *parse.ActionNode:
		return usesMessages(n.Pipe)
	case *parse.IfNode:
		return usesMessages(n.Pipe) || usesMessages(n.List) || usesMessages(n.ElseList)
	case *parse.RangeNode:
		return usesMessages(n.Pipe) || usesMessages(n.List) || usesMessages(n.ElseList)
	case *parse.WithNode:
		return usesMessages(n.Pipe) || usesMessages(n.List) || usesMessages(n.ElseList)
	case *parse.TemplateNode:
		return n.Pipe != nil && usesMessages(n.Pipe)
	case *parse.PipeNode:
		if n == nil {
			return false
		}
		for _, c := range n.Cmds {
			for _, a := range c.Args {
				if usesMessages(a) {
					return true
				}
			}
		}
	case *parse.FieldNode:
		return hasMessages(n.Ident)
	case *parse.VariableNode:
		return hasMessages(n.Ident)
	}
	return false
}

func hasMessages(idents []string) bool {
	for _, s := range idents {
		if strings.ToLower(s) == "messages" {
			return true
		}
	}
	return false
}

func collate(msgs []message) (string, []*message) {
	var system []string
	var out []*message
	for i := range msgs {
		if msgs[i].Role == "system" {
			system = append(system, msgs[i].Content)
		}
		if len(out) > 0 && out[len(out)-1].Role == msgs[i].Role && msgs[i].Role != "tool" {
			out[len(out)-1].Content += "\n\n" + msgs[i].Content
		} else {
			m := msgs[i]
			out = append(out, &m)
		}
	}
	return strings.Join(system, "\n\n"), out
}

func render(text string, msgs []message) (string, error) {
	t, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(text)
	if err != nil {
		return "", err
	}
	found := false
	for _, tt := range t.Templates() {
		found = found || usesMessages(tt.Root)
	}
	if !found {
		return "", errors.New("the template does not use .Messages (Ollama's legacy path is not run here)")
	}
	system, collated := collate(msgs)
	var b bytes.Buffer
	err = t.Execute(&b, map[string]any{
		"System": system, "Messages": collated, "Tools": []any(nil), "Response": "",
		"Think": false, "ThinkLevel": "", "IsThinkSet": false,
	})
	return b.String(), err
}

func main() {
	var cases []request
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		os.Stderr.WriteString("bad input: " + err.Error() + "\n")
		os.Exit(2)
	}
	results := make([]map[string]string, 0, len(cases))
	for _, c := range cases {
		msgs := make([]message, len(c.Messages))
		for i, m := range c.Messages {
			msgs[i] = message{Role: m.Role, Content: m.Content}
		}
		if out, err := render(c.Template, msgs); err != nil {
			results = append(results, map[string]string{"err": err.Error()})
		} else {
			results = append(results, map[string]string{"out": out})
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		os.Exit(1)
	}
}
