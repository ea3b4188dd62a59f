-- Helpers shared by the entries (loaded with require, once per call).
local M = {}

-- Notes live in the runtime workspace: relative host paths resolve against the
-- skill's own directory, which is read-only here.
function M.folder()
  local folder = vulcan.config.get("folder")
  if folder == nil or folder == "" then folder = "notes" end
  return vulcan.path.join(vulcan.runtime.workspace(), folder)
end

function M.slug(title)
  local s = title:lower():gsub("[^%w]+", "-"):gsub("^-+", ""):gsub("-+$", "")
  if s == "" then s = "note" end
  return s:sub(1, 60)
end

function M.load_all(folder)
  local notes = {}
  if not vulcan.fs.exists(folder) then return notes end
  for _, item in ipairs(vulcan.fs.list(folder)) do
    if item.type == "file" and item.name:match("%.json$") then
      local note = vulcan.json.decode(vulcan.fs.read(vulcan.path.join(folder, item.name)))
      note.file = item.name
      notes[#notes + 1] = note
    end
  end
  table.sort(notes, function(a, b) return a.file < b.file end)
  return notes
end

function M.words(text)
  local set = {}
  for w in text:lower():gmatch("%w+") do set[w] = true end
  return set
end

function M.cosine(a, b)
  local dot, na, nb = 0, 0, 0
  for i = 1, math.min(#a, #b) do
    dot = dot + a[i] * b[i]
    na = na + a[i] * a[i]
    nb = nb + b[i] * b[i]
  end
  if na == 0 or nb == 0 then return 0 end
  return dot / math.sqrt(na * nb)
end

return M
