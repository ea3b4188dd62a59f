local lib = require("notes_lib")

return function(args)
  local notes = lib.load_all(lib.folder())
  local limit = args.limit or 5
  local by_meaning = vulcan.models.has("embed")
  local scored = {}
  if by_meaning then
    local q = vulcan.models.embed(args.query).vector
    for _, note in ipairs(notes) do
      local v = vulcan.models.embed(note.title .. "\n" .. note.text).vector
      scored[#scored + 1] = {title = note.title, file = note.file, score = lib.cosine(q, v)}
    end
  else
    local wanted = lib.words(args.query)
    for _, note in ipairs(notes) do
      local have, score = lib.words(note.title .. " " .. note.text), 0
      for w in pairs(wanted) do if have[w] then score = score + 1 end end
      if score > 0 then
        scored[#scored + 1] = {title = note.title, file = note.file, score = score}
      end
    end
  end
  table.sort(scored, function(a, b)
    if a.score ~= b.score then return a.score > b.score end
    return a.file < b.file
  end)
  local hits = {}
  for i = 1, math.min(limit, #scored) do hits[i] = scored[i] end
  return {query = args.query, method = by_meaning and "embedding" or "keywords", hits = hits}
end
